//! Deleting one turn (`DELETE /v1/responses/{id}`, a response made with `store: false` once it
//! ended): one implementation for both backends, through migration V13's `delete_turn`.

use async_trait::async_trait;
use uuid::Uuid;

use super::keys::TextRows;
use super::{TurnDelete, TurnDeleted};
use crate::error::StoreError;

#[async_trait]
impl<T: TextRows> TurnDelete for T {
    async fn delete_turn(&self, owner: &str, id: Uuid) -> Result<TurnDeleted, StoreError> {
        let rows = self
            .text_rows(
                "SELECT delete_turn($1::text::uuid, $2::text)",
                &[Some(id.to_string()), Some(owner.to_owned())],
            )
            .await?;
        match rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .flatten()
            .as_deref()
        {
            Some("deleted") => Ok(TurnDeleted::Deleted),
            Some("not_found") => Ok(TurnDeleted::NotFound),
            Some("running") => Ok(TurnDeleted::Running),
            Some("continued") => Ok(TurnDeleted::Continued),
            _ => Err(StoreError::Decode {
                column: "delete_turn",
            }),
        }
    }
}
