//! The ConfigMaps the operator writes: the compiled policy, and one per inline document
//! collection. ConfigMaps that `spec.documents[].configMapRef` names belong to the user and are
//! only mounted.

use std::collections::BTreeMap;

use palisade_crds::k8s_openapi::api::core::v1::ConfigMap;

use super::meta::object_meta;
use super::volumes::policy_file_name;
use crate::names::{self, Component, POLICY_HASH_ANNOTATION};
use crate::validate::ValidatedServer;

/// The ConfigMap `<server>-policy`: the PolicyDocument under `policy.yaml`, its hash in the
/// annotation `palisade.dev/policy-hash`.
///
/// The server reloads the file when the ConfigMap changes (the kubelet swaps it in place), so a
/// policy change reaches the pods without a restart.
pub fn policy_config_map(input: &ValidatedServer<'_>) -> ConfigMap {
    let mut metadata = object_meta(input, names::policy_config_map(input.name()), Component::Policy);
    metadata.annotations = Some(BTreeMap::from([(
        POLICY_HASH_ANNOTATION.to_owned(),
        input.policy_hash().to_owned(),
    )]));
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            policy_file_name().to_owned(),
            input.document().to_yaml(),
        )])),
        ..ConfigMap::default()
    }
}

/// One ConfigMap `<server>.docs.<collection>` ([`names::documents_config_map`]) per inline collection: document name → content.
pub fn document_config_maps(input: &ValidatedServer<'_>) -> Vec<ConfigMap> {
    input
        .server()
        .spec
        .documents
        .iter()
        .filter_map(|collection| {
            let documents = collection.inline.as_ref()?;
            let name = names::documents_config_map(input.name(), &collection.collection);
            Some(ConfigMap {
                metadata: object_meta(input, name, Component::Documents),
                data: Some(documents.iter().map(|d| (d.name.clone(), d.content.clone())).collect()),
                ..ConfigMap::default()
            })
        })
        .collect()
}
