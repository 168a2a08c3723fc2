//! What the Postgres sink and the Postgres source share about their
//! connections: the client TLS they offer, and how an error is said.

use std::sync::Arc;

/// TLS for Postgres connections (sinks and sources), used when the URL
/// asks for it (`sslmode=require`) or allows it (`prefer`, the default),
/// trusting the web's root certificates.
pub fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Postgres's error without the connection string (it may hold a password).
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("Postgres said: {} ({})", db.message(), db.code().code()),
        None => format!("Postgres: {err}"),
    }
}
