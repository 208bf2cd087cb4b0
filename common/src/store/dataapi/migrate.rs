//! Migrations through the Data API: the same embedded files as the pool's, one statement per
//! call inside one transaction that holds the migration lock, recorded in refinery's history
//! table (so both modes share one history).

use async_trait::async_trait;
use time::OffsetDateTime;

use super::fields::{Record, long_at, string_at};
use super::params::{long, text};
use super::{DataApiStore, sdk_error};
use crate::error::StoreError;
use crate::store::Migrate;
use crate::store::schema::{self, MIGRATION_LOCK};

impl DataApiStore {
    async fn begin(&self) -> Result<String, StoreError> {
        let out = self
            .client
            .begin_transaction()
            .resource_arn(&self.cluster_arn)
            .secret_arn(&self.secret_arn)
            .database(&self.database)
            .send()
            .await
            .map_err(sdk_error)?;
        out.transaction_id()
            .map(str::to_owned)
            .ok_or(StoreError::Decode {
                column: "transactionId",
            })
    }

    async fn end(&self, transaction: &str, commit: bool) -> Result<(), StoreError> {
        if commit {
            self.client
                .commit_transaction()
                .resource_arn(&self.cluster_arn)
                .secret_arn(&self.secret_arn)
                .transaction_id(transaction)
                .send()
                .await
                .map_err(sdk_error)?;
        } else {
            self.client
                .rollback_transaction()
                .resource_arn(&self.cluster_arn)
                .secret_arn(&self.secret_arn)
                .transaction_id(transaction)
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(())
    }

    /// The migration work inside one transaction: lock, history, pending files, search config.
    async fn migrate_in(&self, tx: &str, search_config: &str) -> Result<usize, StoreError> {
        let t = Some(tx);
        self.exec(
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock(CAST(:lock AS int8))) l",
            vec![long("lock", MIGRATION_LOCK)],
            t,
        )
        .await?;
        // The table refinery keeps: both modes share one history.
        self.exec(
            "CREATE TABLE IF NOT EXISTS refinery_schema_history (version int4 PRIMARY KEY, \
             name varchar(255), applied_on varchar(255), checksum varchar(255))",
            vec![],
            t,
        )
        .await?;
        let applied = self
            .exec(
                "SELECT version, checksum FROM refinery_schema_history",
                vec![],
                t,
            )
            .await?;
        let mut done = std::collections::HashMap::new();
        for r in applied.records() {
            let r = Record::new(r, &["version", "checksum"]);
            done.insert(long_at(&r, "version")?, string_at(&r, "checksum")?);
        }
        let mut count = 0;
        for m in schema::embedded_migrations() {
            let version = i64::from(m.version());
            if let Some(checksum) = done.get(&version) {
                if *checksum != m.checksum().to_string() {
                    return Err(StoreError::DataApi {
                        message: format!(
                            "migration V{version} {} differs from the one applied",
                            m.name()
                        ),
                        unavailable: false,
                    });
                }
                continue;
            }
            for statement in schema::split_statements(m.sql().unwrap_or_default()) {
                self.exec(&statement, vec![], t).await?;
            }
            let applied_on = OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            self.exec(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                 VALUES (CAST(:version AS int4), :name, :applied_on, :checksum)",
                vec![
                    long("version", version),
                    text("name", m.name()),
                    text("applied_on", &applied_on),
                    text("checksum", &m.checksum().to_string()),
                ],
                t,
            )
            .await?;
            count += 1;
        }
        self.ensure_search_config(tx, search_config).await?;
        Ok(count)
    }

    async fn ensure_search_config(&self, tx: &str, config: &str) -> Result<(), StoreError> {
        let t = Some(tx);
        let out = self.exec(schema::SEARCH_EXPR_SQL, vec![], t).await?;
        let Some(record) = out.records().first() else {
            return Ok(());
        };
        if schema::search_config_matches(
            &string_at(&Record::new(record, &["search"]), "search")?,
            config,
        ) {
            return Ok(());
        }
        let out = self
            .exec(
                "SELECT cfgname::text FROM pg_ts_config WHERE cfgname = CAST(:config AS name)",
                vec![text("config", config)],
                t,
            )
            .await?;
        let Some(record) = out.records().first() else {
            return Err(StoreError::UnknownSearchConfig(config.to_owned()));
        };
        let name = string_at(&Record::new(record, &["cfgname"]), "cfgname")?;
        tracing::warn!(config = %name, "rebuilding the search column for a new text search configuration");
        for statement in schema::search_column_ddl(&name) {
            self.exec(&statement, vec![], t).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Migrate for DataApiStore {
    /// One transaction: the migration lock, then each pending file one statement per call,
    /// recorded in refinery's history table (so the pool and the Data API share one history).
    async fn migrate(&self, search_config: &str) -> Result<usize, StoreError> {
        let tx = self.begin().await?;
        match self.migrate_in(&tx, search_config).await {
            Ok(n) => {
                self.end(&tx, true).await?;
                Ok(n)
            }
            Err(e) => {
                if let Err(rollback) = self.end(&tx, false).await {
                    tracing::warn!(error = %rollback, "rolling back the migration failed");
                }
                Err(e)
            }
        }
    }

    async fn ensure_login(
        &self,
        name: &str,
        password: &str,
        groups: &str,
    ) -> Result<(), StoreError> {
        let args = super::params::Args::default()
            .text(name)
            .text(password)
            .text(groups);
        self.exec(
            &super::params::named(crate::store::sql::ENSURE_LOGIN),
            args.0,
            None,
        )
        .await?;
        Ok(())
    }
}
