//! Idempotent creates: a job that creates something under an id the publisher chose (a
//! transfer, a batch, a return, an order) answers a re-sent create with what it created the
//! first time, and refuses the id when it is re-used for something else.
//!
//! The opening is always the same two steps, here once: [`lock`] serialises every job creating
//! the same id until its transaction ends (a transaction-scoped advisory lock, in a namespace
//! of its own per kind, [`Creates`]), then the caller looks up the stored row (now stable: any
//! other creator of the id has committed or rolled back) and [`compare`]s it with the job.
//! The inbox cannot do this: two different messages may carry the same business id.

use simflow_schemas::reason::Reason;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::handler::JobError;

/// What is created once per id; each kind locks in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creates {
    /// `inventory.transfers`.
    Transfer,
    /// `inventory.issue_batches`.
    IssueBatch,
    /// `inventory.returns`.
    Return,
    /// `writecard.orders`.
    Order,
}

impl Creates {
    /// The advisory-lock namespace (the second argument of `hashtextextended`). Fixed: a
    /// changed value would let an old and a new worker create the same id at once during a
    /// rolling upgrade.
    fn namespace(self) -> i64 {
        match self {
            Creates::Transfer => 7,
            Creates::IssueBatch => 11,
            Creates::Return => 13,
            Creates::Order => 17,
        }
    }
}

/// Serialises every job creating `id` of this kind until the caller's transaction ends.
pub async fn lock(db: &mut PgConnection, kind: Creates, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
        .bind(id.to_string())
        .bind(kind.namespace())
        .execute(db)
        .await?;
    Ok(())
}

/// What a create found under its id: nothing (create it), the same thing (answer it again),
/// or something else (`conflict`).
pub fn compare<R>(
    stored: Option<R>,
    same: impl FnOnce(&R) -> bool,
    conflict: Reason,
) -> Result<Option<R>, JobError> {
    match stored {
        Some(stored) if same(&stored) => Ok(Some(stored)),
        Some(_) => Err(JobError::reject(conflict)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_locks_in_a_namespace_of_its_own() {
        let kinds = [
            Creates::Transfer,
            Creates::IssueBatch,
            Creates::Return,
            Creates::Order,
        ];
        let mut namespaces: Vec<i64> = kinds.iter().map(|kind| kind.namespace()).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        assert_eq!(namespaces.len(), kinds.len());
    }

    #[test]
    fn a_stored_row_is_answered_again_or_refused_as_a_conflict() {
        const CONFLICT: Reason = Reason {
            code: "ID_CONFLICT",
            zh: "冲突",
            en: "conflict",
        };
        assert!(matches!(compare(None::<u8>, |_| true, CONFLICT), Ok(None)));
        assert!(matches!(
            compare(Some(1), |v| *v == 1, CONFLICT),
            Ok(Some(1))
        ));
        let refused = compare(Some(2), |v| *v == 1, CONFLICT);
        assert!(matches!(refused, Err(JobError::Rejected(r)) if r.reason.code == "ID_CONFLICT"));
    }
}
