//! Metadata every child shares.

use palisade_crds::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{self, Component};
use crate::validate::ValidatedServer;

/// Name, namespace, labels and (when the server has a uid) the controller owner reference.
pub(crate) fn object_meta(input: &ValidatedServer<'_>, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(input.namespace().to_owned()),
        labels: Some(names::labels(input.name(), component)),
        owner_references: input.owner_reference().map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}
