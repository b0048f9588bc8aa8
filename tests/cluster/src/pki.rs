//! The certificates and keys of a local control plane, generated afresh for every start: one CA
//! that signs the API server's serving certificate and the client certificates (the admin in
//! `system:masters`, the controller manager as `system:kube-controller-manager`), and the
//! service-account signing key pair.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// A certificate and its private key, as PEM files on disk.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// Every file the control plane's processes and clients need.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (PEM): trusted by clients for the API server, and by the API server
    /// for client certificates.
    pub ca_cert: PathBuf,
    /// The API server's serving certificate (`127.0.0.1`, `localhost`, `kubernetes.default.svc`
    /// and the first Service IP).
    pub serving: Pair,
    /// The cluster administrator (`system:masters`).
    pub admin: Pair,
    /// `system:kube-controller-manager`.
    pub controller_manager: Pair,
    /// The service-account token signing key (private: `key`, public: `cert` is the public key).
    pub service_account_key: PathBuf,
    /// The public half of [`Pki::service_account_key`].
    pub service_account_public_key: PathBuf,
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "palisade-cluster-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    fn leaf(
        &self,
        common_name: &str,
        organization: Option<&str>,
        alt_names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<(String, String), Error> {
        let mut params = CertificateParams::new(alt_names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        if let Some(organization) = organization {
            params.distinguished_name.push(DnType::OrganizationName, organization);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

fn write_pair(dir: &Path, name: &str, (cert, key): (String, String)) -> Result<Pair, Error> {
    Ok(Pair {
        cert: write(dir, &format!("{name}.crt"), &cert)?,
        key: write(dir, &format!("{name}.key"), &key)?,
    })
}

impl Pki {
    /// Generates every certificate and key into `dir`.
    pub fn generate(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let ca = Ca::new()?;
        let serving = ca.leaf(
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "localhost",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = ca.leaf(
            "palisade-admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let controller_manager = ca.leaf(
            "system:kube-controller-manager",
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca_cert: write(dir, "ca.crt", &ca.pem)?,
            serving: write_pair(dir, "apiserver", serving)?,
            admin: write_pair(dir, "admin", admin)?,
            controller_manager: write_pair(dir, "controller-manager", controller_manager)?,
            service_account_key: write(dir, "service-account.key", &service_account.serialize_pem())?,
            service_account_public_key: write(dir, "service-account.pub", &service_account.public_key_pem())?,
        })
    }
}
