//! The ServiceAccount the server pods run as.
//!
//! The server calls no Kubernetes API, so no token is mounted (here and on the pod). The account
//! exists for the annotations of `spec.serviceAccount` (GKE Workload Identity, EKS IRSA), e.g. for
//! a SecretStore that authenticates to a cloud secret manager as this account.

use palisade_crds::k8s_openapi::api::core::v1::ServiceAccount;

use super::meta::object_meta;
use crate::names::{self, Component};
use crate::validate::ValidatedServer;

/// Builds the ServiceAccount.
pub fn service_account(input: &ValidatedServer<'_>) -> ServiceAccount {
    let mut metadata = object_meta(input, names::service_account(input.name()), Component::Server);
    metadata.annotations = input
        .server()
        .spec
        .service_account
        .as_ref()
        .map(|sa| sa.annotations.clone())
        .filter(|annotations| !annotations.is_empty());
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
