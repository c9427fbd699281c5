//! Outlet nodes over TLS: a client certificate per outlet instead of a password.
//!
//! The node makes its own key pair and a certificate signing request (CSR) whose common name
//! is its broker user (`simflow outlet tls-request`); the private key never leaves the node,
//! as with the key its write scripts are sealed to. The centre signs the request with the
//! outlet CA at provisioning ([`OutletCa::issue`]): it takes only the public key from the
//! request and sets everything else itself (common name, serial, a short validity, client
//! authentication only). The broker's `rabbitmq_auth_mechanism_ssl` plugin maps the
//! certificate's common name to the broker user (`ssl_cert_login_from = common_name`), so a
//! TLS outlet's broker user has no password and logs in with `EXTERNAL` only.
//!
//! The node connects with [`ClientTls`]: the outlet CA's certificate is the only trust anchor
//! for the server (no system or bundled roots), and its own certificate and key are the
//! client identity.
//!
//! This module holds no database and no broker calls: recording serials and deleting broker
//! users is the callers' (`simflow_writecard::outlets`, [`crate::outlet`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use rcgen::{
    CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams, DnType,
    DnValue, ExtendedKeyUsagePurpose, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use secrecy::{ExposeSecret, SecretString};

/// The node's TLS files: the outlet CA's certificate (to verify the broker), and the node's
/// own certificate and private key (its identity).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ClientTls {
    /// PEM certificate(s) the broker's certificate must chain to.
    pub ca_cert: PathBuf,
    /// The node's certificate (PEM), as `simflow outlets provision --csr` issued it.
    pub cert: PathBuf,
    /// The node's private key (PEM, mode 0600), as `simflow outlet tls-request` made it.
    pub key: PathBuf,
}

impl ClientTls {
    /// Reads the three files, refusing a key file others may read. Errors name the file,
    /// never its content.
    pub fn load(&self) -> anyhow::Result<LoadedTls> {
        let ca = std::fs::read_to_string(&self.ca_cert)
            .with_context(|| format!("reading the CA certificate {}", self.ca_cert.display()))?;
        anyhow::ensure!(
            ca.contains("-----BEGIN CERTIFICATE-----"),
            "{} holds no PEM certificate",
            self.ca_cert.display()
        );
        let cert = std::fs::read(&self.cert)
            .with_context(|| format!("reading the outlet certificate {}", self.cert.display()))?;
        anyhow::ensure!(
            String::from_utf8_lossy(&cert).contains("-----BEGIN CERTIFICATE-----"),
            "{} holds no PEM certificate",
            self.cert.display()
        );
        let key = read_private_key(&self.key)?;
        Ok(LoadedTls::from_pem(
            &ca,
            Some((&String::from_utf8_lossy(&cert), &key)),
        ))
    }
}

/// A TLS configuration for `amqps`, ready to connect with: the trusted CA and, usually, a
/// client identity. Its `Debug` prints no key.
#[derive(Clone)]
pub struct LoadedTls(pub(crate) OwnedTLSConfig);

impl std::fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTls")
            .field("client_certificate", &self.0.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl LoadedTls {
    /// Trust only `ca_pem` for the server; present `identity` (certificate PEM, key PEM) as the
    /// client, or no certificate at all.
    pub fn from_pem(ca_pem: &str, identity: Option<(&str, &SecretString)>) -> LoadedTls {
        LoadedTls(OwnedTLSConfig {
            identity: identity.map(|(cert, key)| OwnedIdentity::PKCS8 {
                pem: cert.as_bytes().to_vec(),
                key: key.expose_secret().as_bytes().to_vec(),
            }),
            cert_chain: Some(ca_pem.to_owned()),
        })
    }
}

/// Reads a PEM private key, refusing a file others may read.
pub fn read_private_key(path: &Path) -> anyhow::Result<SecretString> {
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading key file {}", path.display()))?;
    anyhow::ensure!(
        metadata.permissions().mode() & 0o077 == 0,
        "key file {} is readable by others; chmod 600 it",
        path.display()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    anyhow::ensure!(
        text.contains("PRIVATE KEY-----"),
        "key file {} holds no PEM private key",
        path.display()
    );
    Ok(SecretString::from(text))
}

/// A new key pair and a CSR for it, made on the node.
#[derive(Debug)]
pub struct NodeRequest {
    /// The private key (PKCS#8 PEM); it stays on the node.
    pub key_pem: SecretString,
    /// The request (PEM) to give to the centre.
    pub csr_pem: String,
}

/// Makes a key pair (ECDSA P-256) and a CSR naming `common_name` (the outlet's broker user).
pub fn make_request(common_name: &str) -> anyhow::Result<NodeRequest> {
    let key = KeyPair::generate().context("generating the outlet's TLS key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params
        .serialize_request(&key)
        .context("making the certificate signing request")?;
    Ok(NodeRequest {
        key_pem: SecretString::from(key.serialize_pem()),
        csr_pem: csr.pem().context("encoding the request")?,
    })
}

/// Writes a new key (mode 0600, never over an existing file) and its CSR beside it; returns
/// the CSR.
pub fn write_request(
    key_file: &Path,
    csr_file: &Path,
    common_name: &str,
) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let request = make_request(common_name)?;
    if let Some(dir) = key_file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)
        .with_context(|| format!("creating {} (it must not exist yet)", key_file.display()))?;
    file.write_all(request.key_pem.expose_secret().as_bytes())?;
    file.sync_all()?;
    std::fs::write(csr_file, &request.csr_pem)
        .with_context(|| format!("writing {}", csr_file.display()))?;
    Ok(request.csr_pem)
}

/// A certificate the outlet CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate (PEM), for the node's `cert` file.
    pub pem: String,
    /// Its serial number, upper-case hex.
    pub serial: String,
    /// Its common name (the outlet's broker user).
    pub common_name: String,
    /// Valid from.
    pub not_before: DateTime<Utc>,
    /// Valid until.
    pub not_after: DateTime<Utc>,
}

/// A serial the CA revoked, for its CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// Upper-case hex, as [`IssuedCertificate::serial`].
    pub serial: String,
    /// When.
    pub revoked_at: DateTime<Utc>,
}

/// Why the CA would not sign a request (the clerk never sees these; ops do).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Not a PEM CSR, or its signature does not verify.
    #[error("the certificate signing request is not readable or not signed by its key ({0})")]
    Unreadable(String),
    /// The request names another broker user than the outlet's.
    #[error(
        "the certificate signing request names {found:?}, not the outlet's broker user {expected:?}"
    )]
    WrongName {
        /// The outlet's broker user.
        expected: String,
        /// What the request names.
        found: String,
    },
    /// Signing failed.
    #[error("signing the certificate failed ({0})")]
    Signing(String),
}

/// The centre's outlet CA: its certificate and its private key (a secret: never printed).
pub struct OutletCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for OutletCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutletCa").finish_non_exhaustive()
    }
}

impl OutletCa {
    /// Reads the CA's certificate and key (the key file must be mode 0600).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<OutletCa> {
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading the outlet CA certificate {}", cert.display()))?;
        let key_pem = read_private_key(key)?;
        OutletCa::from_pem(&cert_pem, &key_pem)
            .with_context(|| format!("the outlet CA in {} and {}", cert.display(), key.display()))
    }

    /// The CA from PEM texts.
    pub fn from_pem(cert_pem: &str, key_pem: &SecretString) -> anyhow::Result<OutletCa> {
        // rcgen's errors name what failed, never the key's bytes.
        let key = KeyPair::from_pem(key_pem.expose_secret())
            .map_err(|error| anyhow::anyhow!("the CA key is not a usable PEM key ({error})"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|error| anyhow::anyhow!("the CA certificate is not readable ({error})"))?;
        Ok(OutletCa {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// A new self-signed CA (for tests and first set-up); its certificate and key as PEM.
    pub fn generate(name: &str, validity: Duration) -> anyhow::Result<(String, SecretString)> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + to_time(validity);
        let cert = params.self_signed(&key).context("signing the CA")?;
        Ok((cert.pem(), SecretString::from(key.serialize_pem())))
    }

    /// The CA's certificate (PEM), for the nodes' `ca_cert` and the broker's `cacertfile`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a node's CSR for `common_name` (the outlet's broker user), valid for `validity`.
    /// Only the request's public key is used; the request must name `common_name`, so a
    /// request made for another outlet is refused rather than silently renamed.
    pub fn issue(
        &self,
        csr_pem: &str,
        common_name: &str,
        validity: Duration,
    ) -> Result<IssuedCertificate, IssueError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|error| IssueError::Unreadable(error.to_string()))?;
        let found = match request.params.distinguished_name.get(&DnType::CommonName) {
            Some(DnValue::Utf8String(name)) => name.clone(),
            Some(DnValue::PrintableString(name)) => name.as_str().to_owned(),
            Some(_) | None => String::new(),
        };
        if found != common_name {
            return Err(IssueError::WrongName {
                expected: common_name.to_owned(),
                found,
            });
        }
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        let now = time::OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        // A few minutes back, for a node whose clock is a little behind the centre's.
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + to_time(validity);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(|error| IssueError::Signing(error.to_string()))?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            serial: hex::encode_upper(serial),
            common_name: common_name.to_owned(),
            not_before: to_chrono(params.not_before),
            not_after: to_chrono(params.not_after),
        })
    }

    /// A CRL (PEM) listing `revoked`, numbered `number`, valid for `validity`.
    pub fn crl(
        &self,
        revoked: &[RevokedSerial],
        number: u64,
        validity: Duration,
    ) -> anyhow::Result<String> {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|entry| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(
                        &hex::decode(&entry.serial)
                            .with_context(|| format!("serial {:?} is not hex", entry.serial))?,
                    ),
                    revocation_time: time::OffsetDateTime::from_unix_timestamp(
                        entry.revoked_at.timestamp(),
                    )?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + to_time(validity),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|error| anyhow::anyhow!("signing the CRL failed ({error})"))?;
        crl.pem()
            .map_err(|error| anyhow::anyhow!("encoding the CRL failed ({error})"))
    }
}

fn to_time(duration: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 2))
}

fn to_chrono(moment: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(moment.unix_timestamp(), 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> OutletCa {
        let (cert, key) =
            OutletCa::generate("test outlet CA", Duration::from_secs(3600)).expect("a CA");
        OutletCa::from_pem(&cert, &key).expect("the CA loads")
    }

    #[test]
    fn a_request_for_the_outlets_user_is_signed_with_a_serial_and_a_short_validity() {
        let ca = ca();
        let request = make_request("simflow-outlet-HX01").expect("a request");
        let issued = ca
            .issue(
                &request.csr_pem,
                "simflow-outlet-HX01",
                Duration::from_secs(86_400),
            )
            .expect("signed");
        assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(issued.serial.len(), 32);
        let minutes = (issued.not_after - issued.not_before).num_minutes();
        assert_eq!(minutes, 24 * 60 + 5);
        let again = ca
            .issue(
                &request.csr_pem,
                "simflow-outlet-HX01",
                Duration::from_secs(86_400),
            )
            .expect("signed");
        assert_ne!(issued.serial, again.serial);
    }

    #[test]
    fn a_request_naming_another_outlet_is_refused() {
        let ca = ca();
        let request = make_request("simflow-outlet-HX02").expect("a request");
        let refused = ca
            .issue(
                &request.csr_pem,
                "simflow-outlet-HX01",
                Duration::from_secs(60),
            )
            .expect_err("refused");
        assert!(matches!(refused, IssueError::WrongName { .. }), "{refused}");
        let garbage = ca
            .issue(
                "not a request",
                "simflow-outlet-HX01",
                Duration::from_secs(60),
            )
            .expect_err("refused");
        assert!(matches!(garbage, IssueError::Unreadable(_)), "{garbage}");
    }

    #[test]
    fn the_ca_prints_no_key() {
        let ca = ca();
        assert_eq!(format!("{ca:?}"), "OutletCa { .. }");
        let crl = ca
            .crl(
                &[RevokedSerial {
                    serial: "0123ABCD".into(),
                    revoked_at: Utc::now(),
                }],
                1,
                Duration::from_secs(3600),
            )
            .expect("a CRL");
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"));
    }
}
