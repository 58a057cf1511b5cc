//! Callers from client certificates (mutual TLS). rustls has already verified the chain
//! against the client CA by the time this runs; here the verified leaf certificate is read:
//! the user from its `CN` or a subject alternative name (`server.tls.user_from`), the groups
//! from the subject's `O` and `OU` values, as Kubernetes does.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::UserFrom;

/// Why a verified client certificate names no caller.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("the client certificate cannot be parsed")]
    Parse,
    #[error("the client certificate has no {0} to take the user name from")]
    NoUser(&'static str),
}

/// The user and groups a client certificate names.
pub fn identity(der: &[u8], from: UserFrom) -> Result<(String, Vec<String>), CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertError::Parse)?;
    let subject = cert.subject();
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attr.as_str()
            .ok()
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    };
    let user = match from {
        UserFrom::Cn => subject.iter_common_name().find_map(text),
        UserFrom::SanEmail | UserFrom::SanDns | UserFrom::SanUri => cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value
                    .general_names
                    .iter()
                    .find_map(|n| match (from, n) {
                        (UserFrom::SanEmail, GeneralName::RFC822Name(s))
                        | (UserFrom::SanDns, GeneralName::DNSName(s))
                        | (UserFrom::SanUri, GeneralName::URI(s)) => Some((*s).to_owned()),
                        _ => None,
                    })
            }),
    };
    let user = user.ok_or(CertError::NoUser(match from {
        UserFrom::Cn => "common name (CN)",
        UserFrom::SanEmail => "e-mail subject alternative name",
        UserFrom::SanDns => "DNS subject alternative name",
        UserFrom::SanUri => "URI subject alternative name",
    }))?;
    let groups = subject
        .iter_organization()
        .chain(subject.iter_organizational_unit())
        .filter_map(text)
        .collect();
    Ok((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, groups: &[&str], sans: Vec<SanType>) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        crate::identity::devca::push_groups(&mut p.distinguished_name, "u", &groups).unwrap();
        p.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn user_from_cn_and_groups_from_o_and_ou() {
        let der = cert(Some("alice"), &["team-a", "devs", "ops"], vec![]);
        let (user, groups) = identity(&der, UserFrom::Cn).unwrap();
        assert_eq!(user, "alice");
        assert_eq!(groups, ["team-a", "devs", "ops"]);
    }

    #[test]
    fn user_from_a_san() {
        let der = cert(
            Some("ignored"),
            &[],
            vec![
                SanType::DnsName("bob.example".try_into().unwrap()),
                SanType::Rfc822Name("bob@example.com".try_into().unwrap()),
                SanType::URI("spiffe://example/bob".try_into().unwrap()),
            ],
        );
        assert_eq!(
            identity(&der, UserFrom::SanEmail).unwrap().0,
            "bob@example.com"
        );
        assert_eq!(identity(&der, UserFrom::SanDns).unwrap().0, "bob.example");
        assert_eq!(
            identity(&der, UserFrom::SanUri).unwrap().0,
            "spiffe://example/bob"
        );
    }

    #[test]
    fn missing_names_are_errors() {
        let der = cert(None, &["g"], vec![]);
        assert!(matches!(
            identity(&der, UserFrom::Cn),
            Err(CertError::NoUser(_))
        ));
        assert!(matches!(
            identity(&der, UserFrom::SanEmail),
            Err(CertError::NoUser(_))
        ));
        assert_eq!(identity(b"junk", UserFrom::Cn), Err(CertError::Parse));
    }
}
