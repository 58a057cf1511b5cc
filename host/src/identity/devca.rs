//! `portcullis certs init`: a development CA, a server certificate for the local machine and
//! one client certificate per user, laid out the way the docker CLI reads `DOCKER_CERT_PATH`
//! (`ca.pem`, `cert.pem`, `key.pem` in one folder), so mutual TLS can be tried in a minute.
//! Not a production PKI: keys are written unencrypted and the CA key sits next to its cert.
//!
//! ```text
//! DIR/ca.pem  DIR/ca-key.pem
//! DIR/server/{ca,cert,key}.pem      valid for localhost, 127.0.0.1 and ::1
//! DIR/<user>/{ca,cert,key}.pem      CN=<user>, groups in O (and OU, beyond two groups)
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

/// How long generated leaf certificates are valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the generated CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("user name {0:?} cannot be a folder name")]
    BadUser(String),
    #[error("{user}: at most {MAX_GROUPS} groups fit in a development certificate")]
    TooManyGroups { user: String },
}

/// Most groups `certs init` puts in one certificate. rcgen keeps one value per attribute
/// type, so the groups go to `O` twice (the named type, then the same OID as a custom type)
/// and `OU` twice. Certificates from other CAs may carry any number; all are read.
pub const MAX_GROUPS: usize = 4;

/// Puts `groups` in the subject as `O`, `O`, `OU`, `OU` values (see [`MAX_GROUPS`]).
pub fn push_groups(
    dn: &mut DistinguishedName,
    user: &str,
    groups: &[String],
) -> Result<(), DevCaError> {
    if groups.len() > MAX_GROUPS {
        return Err(DevCaError::TooManyGroups {
            user: user.to_owned(),
        });
    }
    let slots = [
        DnType::OrganizationName,
        DnType::CustomDnType(vec![2, 5, 4, 10]),
        DnType::OrganizationalUnitName,
        DnType::CustomDnType(vec![2, 5, 4, 11]),
    ];
    for (slot, g) in slots.into_iter().zip(groups) {
        dn.push(slot, g.as_str());
    }
    Ok(())
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A CA that signs server and client certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl DevCa {
    /// A new CA.
    pub fn generate() -> Result<Self, DevCaError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        // A name of its own: two development CAs with one name would make a certificate of
        // the other look like a forgery (TLS "decrypt error") instead of "unknown CA".
        let tag = random_serial()?.to_bytes();
        let tag = hex::encode(&tag[..4]);
        p.distinguished_name.push(
            DnType::CommonName,
            format!("portcullis development CA {tag}"),
        );
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        validity(&mut p, now - Duration::from_secs(3600), now + CA_VALIDITY);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(p, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The CA written by an earlier `certs init` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, DevCaError> {
        let cert_pem = read(&dir.join("ca.pem"))?;
        let key_pem = read(&dir.join("ca-key.pem"))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Self {
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, DevCaError> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "portcullis");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        validity(&mut p, now - Duration::from_secs(3600), now + LEAF_VALIDITY);
        self.sign(p)
    }

    /// A client certificate: `CN=user`, groups as `O` (then `OU`) values, valid from `not_before`
    /// to `not_after` (tests make expired ones).
    pub fn issue_client(
        &self,
        user: &str,
        groups: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, DevCaError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, user);
        push_groups(&mut p.distinguished_name, user, groups)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut p, not_before, not_after);
        self.sign(p)
    }

    fn sign(&self, mut p: CertificateParams) -> Result<Issued, DevCaError> {
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn validity(p: &mut CertificateParams, from: SystemTime, to: SystemTime) {
    p.not_before = from.into();
    p.not_after = to.into();
}

fn random_serial() -> Result<SerialNumber, DevCaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    // A positive DER integer: top bit clear.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn read(path: &Path) -> Result<String, DevCaError> {
    std::fs::read_to_string(path).map_err(|source| DevCaError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), DevCaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| DevCaError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Replace rather than rewrite in place, so the mode of a new file is the one asked for.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// Writes one `DOCKER_CERT_PATH` folder: `ca.pem`, `cert.pem`, `key.pem`.
pub fn write_cert_dir(dir: &Path, ca: &DevCa, issued: &Issued) -> Result<(), DevCaError> {
    write(&dir.join("ca.pem"), ca.cert_pem(), 0o644)?;
    write(&dir.join("cert.pem"), &issued.cert_pem, 0o644)?;
    write(&dir.join("key.pem"), &issued.key_pem, 0o600)
}

/// What `certs init` wrote.
#[derive(Debug)]
pub struct InitReport {
    /// Whether a CA already in the directory was reused.
    pub reused_ca: bool,
    /// The folders written.
    pub folders: Vec<PathBuf>,
}

/// `certs init DIR`: creates (or reuses) the CA in `dir`, a server certificate in
/// `dir/server` (when missing) and a client certificate folder per user (replaced if present).
pub fn init(dir: &Path, users: &[(String, Vec<String>)]) -> Result<InitReport, DevCaError> {
    for (user, _) in users {
        if user.is_empty()
            || user == "server"
            || user.starts_with('.')
            || user.contains(['/', '\0'])
        {
            return Err(DevCaError::BadUser(user.clone()));
        }
    }
    let reused_ca = dir.join("ca.pem").exists() && dir.join("ca-key.pem").exists();
    let ca = if reused_ca {
        DevCa::load(dir)?
    } else {
        let ca = DevCa::generate()?;
        write(&dir.join("ca.pem"), ca.cert_pem(), 0o644)?;
        write(&dir.join("ca-key.pem"), &ca.key_pem, 0o600)?;
        ca
    };
    let mut folders = Vec::new();
    let server = dir.join("server");
    if !(reused_ca && server.join("cert.pem").exists()) {
        let issued = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
        write_cert_dir(&server, &ca, &issued)?;
        folders.push(server);
    }
    let now = SystemTime::now();
    for (user, groups) in users {
        let issued = ca.issue_client(
            user,
            groups,
            now - Duration::from_secs(3600),
            now + LEAF_VALIDITY,
        )?;
        let folder = dir.join(user);
        write_cert_dir(&folder, &ca, &issued)?;
        folders.push(folder);
    }
    Ok(InitReport { reused_ca, folders })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserFrom;

    #[test]
    fn init_lays_out_docker_cert_paths_and_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let users = [
            (
                "alice".to_owned(),
                vec!["team-a".to_owned(), "b".into(), "c".into(), "d".into()],
            ),
            ("bob".to_owned(), vec![]),
        ];
        let r = init(d, &users).unwrap();
        assert!(!r.reused_ca);
        for f in [
            "ca.pem",
            "ca-key.pem",
            "server/cert.pem",
            "server/key.pem",
            "alice/ca.pem",
            "alice/cert.pem",
            "alice/key.pem",
            "bob/key.pem",
        ] {
            assert!(d.join(f).exists(), "{f} missing");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("alice/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = std::fs::read(d.join("alice/cert.pem")).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let (user, groups) = super::super::cert::identity(&der.contents, UserFrom::Cn).unwrap();
        assert_eq!(
            (user.as_str(), groups.join(",")),
            ("alice", "team-a,b,c,d".to_owned())
        );
        let five = vec!["g".to_owned(); 5];
        assert!(matches!(
            init(d, &[("eve".to_owned(), five)]),
            Err(DevCaError::TooManyGroups { .. })
        ));

        let ca_before = std::fs::read(d.join("ca.pem")).unwrap();
        let r = init(d, &[("carol".to_owned(), vec![])]).unwrap();
        assert!(r.reused_ca);
        assert_eq!(std::fs::read(d.join("ca.pem")).unwrap(), ca_before);
        assert!(d.join("carol/cert.pem").exists());
        assert!(init(d, &[("../x".to_owned(), vec![])]).is_err());
    }
}
