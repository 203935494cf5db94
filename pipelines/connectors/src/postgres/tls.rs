//! TLS to Postgres, with libpq's rules: the `sslmode` and `sslrootcert` keywords (or URL
//! parameters, or `PGSSLMODE` / `PGSSLROOTCERT`) are taken out of a connection string before
//! tokio-postgres parses the rest, and become an OpenSSL connector (the library libpq uses, so
//! certificates verify the same way: a name in the subject's CN is accepted where there is no
//! SAN, `sslrootcert=system` means the system's roots).
//!
//! | `sslmode` | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | – | – |
//! | `prefer` (default) | if the server offers TLS | no | no |
//! | `require` | yes | only if a root certificate is there (then as `verify-ca`) | no |
//! | `verify-ca` | yes | against `sslrootcert` | no |
//! | `verify-full` | yes | against `sslrootcert` | yes |
//!
//! The root certificate is `sslrootcert`, else `$PGSSLROOTCERT`, else `~/.postgresql/root.crt`
//! when that file exists. `allow` and client certificates (`sslcert`, `sslkey`) are refused
//! with what to use instead.

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use percent_encoding::percent_decode_str;
use postgres_openssl::MakeTlsConnector;

/// `sslmode`, as libpq defines it (`allow` aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str, from: &str) -> Result<Self, TlsError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(TlsError(format!(
                    "{from}: sslmode=allow (plain first, TLS only if the server insists) is not \
                     supported; use prefer (TLS when offered) or disable"
                )));
            }
            other => {
                return Err(TlsError(format!(
                    "{from}: sslmode={other:?} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        })
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether to insist.
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

/// Where the trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: OpenSSL's default trust store.
    System,
}

/// A connection string's TLS settings, resolved.
#[derive(Clone)]
pub struct Tls {
    /// The mode in effect (`require` with a root certificate is `verify-ca`).
    pub mode: SslMode,
    /// `None` for `disable`; it holds the trusted roots from `verify-ca` on.
    pub connector: Option<MakeTlsConnector>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A TLS setting that cannot work, with what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The keywords this module owns; tokio-postgres sees none of them.
const OWNED: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
];

/// Splits `conn` into the string tokio-postgres parses (without the TLS keywords) and the
/// TLS settings. `env` reads `PGSSLMODE` / `PGSSLROOTCERT` (the process environment, or a
/// test's), `home` is where `.postgresql/root.crt` is looked for.
pub fn split(
    conn: &str,
    env: impl Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<(String, Tls), TlsError> {
    let (rest, mut found) = take_keywords(conn)?;
    for k in ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"] {
        if found.iter().any(|(key, _)| key == k) {
            return Err(TlsError(format!(
                "{k}: client certificates and CRLs are not supported yet; authenticate with a \
                 password (password_env) over sslmode=verify-full"
            )));
        }
    }
    let mut take = |k: &str| {
        found
            .iter()
            .rposition(|(key, _)| key == k)
            .map(|i| found.swap_remove(i).1)
    };
    let mode = match (take("sslmode"), env("PGSSLMODE").filter(|v| !v.is_empty())) {
        (Some(v), _) => Some(SslMode::parse(&v, "the connection's sslmode")?),
        (None, Some(v)) => Some(SslMode::parse(&v, "$PGSSLMODE")?),
        (None, None) => None,
    };
    let root = take("sslrootcert")
        .map(|v| (v, "the connection's sslrootcert"))
        .or_else(|| {
            env("PGSSLROOTCERT")
                .filter(|v| !v.is_empty())
                .map(|v| (v, "$PGSSLROOTCERT"))
        });
    let default_file = home.map(|h| h.join(".postgresql").join("root.crt"));
    let root_cert = match &root {
        Some((v, _)) if v == "system" => Some(RootCert::System),
        Some((v, _)) => Some(RootCert::File(PathBuf::from(v))),
        None => default_file
            .as_ref()
            .filter(|p| p.is_file())
            .map(|p| RootCert::File(p.clone())),
    };
    // libpq: sslrootcert=system defaults to verify-full and allows nothing weaker.
    let mode = match (mode, &root_cert) {
        (None, Some(RootCert::System)) => SslMode::VerifyFull,
        (Some(m), Some(RootCert::System)) if m < SslMode::VerifyFull => {
            return Err(TlsError(format!(
                "sslmode={} may not be used with sslrootcert=system: the system's roots \
                 vouch for names, so use sslmode=verify-full",
                m.as_str()
            )));
        }
        (None, _) => SslMode::Prefer,
        (Some(m), _) => m,
    };
    // libpq: require with a root certificate present verifies as verify-ca.
    let mode = match (mode, &root_cert) {
        (SslMode::Require, Some(RootCert::File(_))) => SslMode::VerifyCa,
        (m, _) => m,
    };
    if mode >= SslMode::VerifyCa && root_cert.is_none() {
        let looked = match &default_file {
            Some(p) => format!("{} does not exist", p.display()),
            None => "no home directory to find ~/.postgresql/root.crt in".into(),
        };
        return Err(TlsError(format!(
            "sslmode={} needs the server's root certificate and {looked}: give \
             sslrootcert=<PEM file> (or sslrootcert=system for the system's roots), or use \
             sslmode=require to encrypt without checking the certificate",
            mode.as_str()
        )));
    }
    let connector = match mode {
        SslMode::Disable => None,
        _ => Some(connector(
            mode,
            root_cert.as_ref(),
            root.as_ref().map(|r| r.1),
        )?),
    };
    Ok((rest, Tls { mode, connector }))
}

/// The OpenSSL connector for a mode: no verification below `verify-ca`; the chain against
/// the root certificates from `verify-ca`; the host name too at `verify-full`.
fn connector(
    mode: SslMode,
    root: Option<&RootCert>,
    from: Option<&str>,
) -> Result<MakeTlsConnector, TlsError> {
    let ssl = |e: openssl::error::ErrorStack| TlsError(format!("setting up TLS: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(ssl)?;
    let verify = mode >= SslMode::VerifyCa;
    if verify {
        b.set_verify(SslVerifyMode::PEER);
        if let Some(RootCert::File(path)) = root {
            // Only this file's certificates are trusted (the builder's default store holds the
            // system's, which libpq does not add to a given sslrootcert).
            let from = from.unwrap_or("the default root certificate");
            let pem = std::fs::read(path).map_err(|e| {
                TlsError(format!(
                    "{from} {}: {e}; give the PEM file of the server's CA (or \
                     sslrootcert=system)",
                    path.display()
                ))
            })?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| {
                TlsError(format!(
                    "{from} {}: not a PEM certificate file ({e})",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(TlsError(format!(
                    "{from} {}: holds no PEM certificate",
                    path.display()
                )));
            }
            let mut store = X509StoreBuilder::new().map_err(ssl)?;
            for c in certs {
                store.add_cert(c).map_err(ssl)?;
            }
            b.set_cert_store(store.build());
        }
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    let mut connector = MakeTlsConnector::new(b.build());
    let check_name = mode == SslMode::VerifyFull;
    connector.set_callback(move |c, _host| {
        c.set_verify_hostname(check_name);
        if !verify {
            c.set_verify(SslVerifyMode::NONE);
        }
        Ok(())
    });
    Ok(connector)
}

/// A handshake failure explained: what the certificate check found and what to change.
pub fn hint(mode: SslMode, message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    if m.contains("server does not support tls") || m.contains("does not support ssl") {
        return Some(format!(
            "the server does not offer TLS but sslmode={} insists: turn ssl on in the server, \
             or use sslmode=prefer (TLS when offered)",
            mode.as_str()
        ));
    }
    if m.contains("hostname mismatch") || m.contains("ip address mismatch") {
        return Some(
            "the server's certificate does not name the host connected to (sslmode=verify-full): \
             connect by a name the certificate holds, or use sslmode=verify-ca to check only \
             the certificate's signer"
                .into(),
        );
    }
    if m.contains("certificate verify failed") {
        return Some(format!(
            "the server's certificate is not signed by a trusted root (sslmode={}): give the \
             server's CA as sslrootcert=<PEM file>, or use sslmode=require to encrypt without \
             checking",
            mode.as_str()
        ));
    }
    None
}

/// The keyword/value pairs of [`OWNED`] taken out of a libpq keyword string or a
/// `postgres://` URL, and the string left.
fn take_keywords(conn: &str) -> Result<(String, Vec<(String, String)>), TlsError> {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else {
            return Ok((conn.to_string(), Vec::new()));
        };
        let mut kept = Vec::new();
        let mut found = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            if OWNED.contains(&k) {
                let v = percent_decode_str(v).decode_utf8().map_err(|_| {
                    TlsError(format!("URL parameter {k}: not valid UTF-8 once decoded"))
                })?;
                found.push((k.to_string(), v.into_owned()));
            } else {
                kept.push(param);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, found));
    }
    let mut kept = Vec::new();
    let mut found = Vec::new();
    let mut it = conn.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next_if_eq(&'=').is_none() {
            // Not ours to judge: tokio-postgres reports the malformed string.
            return Ok((conn.to_string(), Vec::new()));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Ok((conn.to_string(), Vec::new())),
                    Some('\'') => break,
                    Some('\\') => match it.next() {
                        Some(c) => value.push(c),
                        None => return Ok((conn.to_string(), Vec::new())),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(e) = it.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if OWNED.contains(&key.as_str()) {
            found.push((key, value));
        } else {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn tls_keywords_are_taken_out_of_keyword_strings_and_urls() {
        let (rest, found) = take_keywords(
            "host=h port = 5 sslmode=verify-full password='a b\\'c' sslrootcert=/x/ca.pem",
        )
        .expect("split");
        assert_eq!(rest, "host='h' port='5' password='a b\\'c'");
        assert_eq!(
            found,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/x/ca.pem".to_string())
            ]
        );
        let (rest, found) = take_keywords(
            "postgres://u:p@h:5/db?sslmode=require&application_name=a&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .expect("split");
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=a");
        assert_eq!(found[1], ("sslrootcert".into(), "/tmp/ca.pem".into()));
        // What tokio-postgres parses after the split means the same.
        let cfg: tokio_postgres::Config = "host='h' port='5' password='a b\\'c'"
            .parse()
            .expect("parse");
        assert_eq!(cfg.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn modes_follow_libpq() {
        let home = tempfile::tempdir().expect("tmp");
        let mode = |conn: &str| split(conn, no_env, Some(home.path())).map(|(_, t)| t.mode);
        assert_eq!(mode("host=h").expect("default"), SslMode::Prefer);
        assert_eq!(
            mode("host=h sslmode=disable").expect("disable"),
            SslMode::Disable
        );
        assert_eq!(
            mode("host=h sslmode=require").expect("require"),
            SslMode::Require
        );
        let e = mode("host=h sslmode=verify-full").expect_err("no root");
        assert!(e.0.contains("root.crt does not exist"), "{e}");
        assert!(
            mode("host=h sslmode=allow")
                .expect_err("allow")
                .0
                .contains("prefer")
        );
        assert!(
            mode("host=h sslmode=strict")
                .expect_err("bad")
                .0
                .contains("verify-full")
        );
        assert!(
            mode("host=h sslcert=/c")
                .expect_err("client")
                .0
                .contains("not supported")
        );
        let e = mode("host=h sslmode=require sslrootcert=system").expect_err("weak");
        assert!(e.0.contains("verify-full"), "{e}");
        assert_eq!(
            mode("host=h sslrootcert=system").expect("system"),
            SslMode::VerifyFull
        );
        let e = mode("host=h sslmode=verify-ca sslrootcert=/no/such.pem").expect_err("missing");
        assert!(
            e.0.contains("/no/such.pem") && e.0.contains("No such file"),
            "{e}"
        );
        let env = |k: &str| (k == "PGSSLMODE").then(|| "disable".to_string());
        assert_eq!(
            split("host=h", env, None).expect("env").1.mode,
            SslMode::Disable
        );
        // A root certificate in ~/.postgresql makes require verify the chain, as in libpq.
        std::fs::create_dir(home.path().join(".postgresql")).expect("mkdir");
        std::fs::write(home.path().join(".postgresql/root.crt"), b"junk").expect("write");
        let e = mode("host=h sslmode=require").expect_err("junk root");
        assert!(
            e.0.contains("not a PEM certificate") || e.0.contains("no PEM"),
            "{e}"
        );
    }
}
