//! PostgreSQL over TLS with rustls, with libpq's meaning of the connection string's `sslmode`:
//!
//! | `sslmode`            | TLS                          | server certificate checked                   |
//! |----------------------|------------------------------|----------------------------------------------|
//! | `disable`            | never                        | -                                            |
//! | `prefer` (default)   | when the server offers it    | no                                           |
//! | `require`            | always                       | no (chain only when `sslrootcert` is given)  |
//! | `verify-ca`          | always                       | chain, against the roots                     |
//! | `verify-full`        | always                       | chain and host name                          |
//!
//! The roots are `sslrootcert=FILE` (PEM, a private CA) or, without it or with `sslrootcert=system`,
//! the Mozilla roots (webpki-roots). `require` without verification encrypts against a passive
//! listener only; SCRAM channel binding (`tls-server-end-point`, offered whenever the certificate's
//! signature hash is known) additionally stops an active man in the middle from reusing the password
//! exchange. Use `verify-full` on any network you do not control.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::error::{Error, Result};

/// What the connection string asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(s: &str) -> Result<TlsMode> {
        Ok(match s {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(Error::Invalid(format!(
                    "database url: sslmode {other:?} is not one of disable, prefer, require, \
                     verify-ca, verify-full"
                )))
            }
        })
    }
}

/// A parsed connection string: the driver's config and the TLS connector to use with it.
pub(crate) struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustls,
    pub mode: TlsMode,
}

/// Parses a `postgres://` URL or a `key=value` connection string, taking `sslmode` and `sslrootcert`
/// out (the driver knows neither `verify-*` nor root files) and building the matching connector.
pub(crate) fn target(url: &str) -> Result<PgTarget> {
    let (rest, tls_params) = take_tls_params(url)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::Invalid(format!("database url: {e}")))?;
    let mode = match &tls_params.mode {
        Some(m) => TlsMode::parse(m)?,
        None => TlsMode::Prefer,
    };
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    let tls = MakeRustls::new(mode, tls_params.root_cert.as_deref())?;
    Ok(PgTarget { config, tls, mode })
}

#[derive(Default)]
struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` off a connection string, returning the rest unchanged.
fn take_tls_params(url: &str) -> Result<(String, TlsParams)> {
    let mut p = TlsParams::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), p));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => p.mode = Some(percent_decode(v)?),
                "sslrootcert" => p.root_cert = Some(percent_decode(v)?),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, p));
    }
    // key=value form. Values of these two keys are taken unquoted (a path with spaces needs the URL
    // form and %20).
    let mut kept = Vec::new();
    for tok in url.split_whitespace() {
        match tok.split_once('=') {
            Some(("sslmode", v)) => p.mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => p.root_cert = Some(v.to_owned()),
            _ => kept.push(tok),
        }
    }
    Ok((kept.join(" "), p))
}

fn percent_decode(s: &str) -> Result<String> {
    let bad = || Error::Invalid("database url: bad percent-encoding in a TLS parameter".into());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3).ok_or_else(bad)?;
            let h = std::str::from_utf8(h).map_err(|_| bad())?;
            out.push(u8::from_str_radix(h, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The roots to verify against: a PEM file, or the Mozilla roots.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert {
        None | Some("system") => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| {
                Error::Invalid(format!("database url: sslrootcert {path}: {e}"))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                store.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if store.is_empty() {
                return Err(bad(&"no certificate in the file"));
            }
        }
    }
    Ok(store)
}

/// Creates rustls connectors for tokio-postgres (one per connection; the config is shared).
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl MakeRustls {
    fn new(mode: TlsMode, root_cert: Option<&str>) -> Result<MakeRustls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Invalid(format!("tls: {e}")))?;
        // libpq: `require` with a root file given verifies the chain like `verify-ca`.
        let check = match (mode, root_cert) {
            (TlsMode::VerifyFull, _) => Check::Full,
            (TlsMode::VerifyCa, _) | (TlsMode::Require, Some(_)) => Check::Chain,
            _ => Check::None,
        };
        let config = if check == Check::Full {
            builder
                .with_root_certificates(roots(root_cert)?)
                .with_no_client_auth()
        } else {
            let roots = match check {
                Check::Chain => Some(Arc::new(roots(root_cert)?)),
                _ => None,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PartialVerifier { roots, provider }))
                .with_no_client_auth()
        };
        Ok(MakeRustls {
            config: Arc::new(config),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Chain,
    Full,
}

/// The verifier of `require` (no check) and `verify-ca` (chain, not the name). Handshake signatures are
/// always verified: the server must hold the key of the certificate it presents.
#[derive(Debug)]
struct PartialVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PartialVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(s))
        })
    }
}

pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// `tls-server-end-point` (RFC 5929): the hash of the server's certificate with the hash of its
    /// signature algorithm (SHA-256 for MD5 and SHA-1). Unknown algorithms offer no binding, and
    /// SCRAM then runs without it (as libpq does when it cannot bind).
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
            return ChannelBinding::none();
        };
        match signature_hash(cert) {
            Some(Hash::Sha256) => {
                ChannelBinding::tls_server_end_point(sha2::Sha256::digest(cert).to_vec())
            }
            Some(Hash::Sha384) => {
                ChannelBinding::tls_server_end_point(sha2::Sha384::digest(cert).to_vec())
            }
            Some(Hash::Sha512) => {
                ChannelBinding::tls_server_end_point(sha2::Sha512::digest(cert).to_vec())
            }
            None => ChannelBinding::none(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// One DER element: (tag, content, what follows).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, r) = rest.split_at_checked(n)?;
        rest = r;
        bytes.iter().fold(0usize, |a, &b| (a << 8) | b as usize)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// The hash of a certificate's signature algorithm, as RFC 5929 uses it.
fn signature_hash(cert: &[u8]) -> Option<Hash> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, body, _) = der(cert)? else {
        return None;
    };
    let (_, _tbs, rest) = der(body)?;
    let (SEQUENCE, alg, _) = der(rest)? else {
        return None;
    };
    let (OID, oid, _) = der(alg)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    match oid {
        [p @ .., n] if p == RSA => match n {
            // md5WithRSA, sha1WithRSA: SHA-256 by the RFC.
            0x04 | 0x05 | 0x0b => Some(Hash::Sha256),
            0x0c => Some(Hash::Sha384),
            0x0d => Some(Hash::Sha512),
            _ => None,
        },
        [p @ .., n] if p == ECDSA_SHA2 => match n {
            0x02 => Some(Hash::Sha256),
            0x03 => Some(Hash::Sha384),
            0x04 => Some(Hash::Sha512),
            _ => None,
        },
        o if o == ECDSA_SHA1 => Some(Hash::Sha256),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_leave_the_rest_alone() {
        let (rest, p) = take_tls_params(
            "postgres://u:p@h:5432/db?options=-c%20x%3Dy&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5432/db?options=-c%20x%3Dy");
        assert_eq!(p.mode.as_deref(), Some("verify-full"));
        assert_eq!(p.root_cert.as_deref(), Some("/tmp/ca.crt"));
        let (rest, p) = take_tls_params("host=h dbname=db sslmode=require").unwrap();
        assert_eq!(rest, "host=h dbname=db");
        assert_eq!(p.mode.as_deref(), Some("require"));
        let (rest, p) = take_tls_params("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(p.mode.as_deref(), Some("disable"));
        assert!(target("postgres://h/db?sslmode=verify-everything").is_err());
        assert!(
            target("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem").is_err()
        );
        assert_eq!(target("postgres://h/db").unwrap().mode, TlsMode::Prefer);
    }

    #[test]
    fn der_walk_finds_the_signature_hash() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID ecdsa-with-SHA384 }, BIT STRING }
        let cert = [
            0x30, 0x12, 0x30, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04,
            0x03, 0x03, 0x03, 0x02, 0x00, 0x00,
        ];
        assert_eq!(signature_hash(&cert), Some(Hash::Sha384));
        assert_eq!(signature_hash(&cert[..5]), None);
        assert_eq!(signature_hash(&[]), None);
    }
}
