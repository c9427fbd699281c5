//! Who may do what: staff IDs, their warehouse bindings and permissions.

use simflow_runtime::JobError;
use sqlx::PgConnection;

use crate::reasons;

/// A permission a staff ID holds for a warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// May create transfers out of the warehouse.
    TransferCreate,
    /// May approve transfers out of or into the warehouse (HQ CRM 调拨审核).
    TransferApprove,
    /// May issue cards to agents and take returns (HQ ESS 批量领卡/批量退卡).
    EssBatch,
    /// May record writers bought for the branch of this secondary warehouse (market department).
    WriterPurchase,
    /// May issue, take back, send for repair and write off the branch's writers.
    Writers,
}

impl Permission {
    /// The permission's name in `inventory.staff_warehouses.permissions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TransferCreate => "transfer_create",
            Permission::TransferApprove => "transfer_approve",
            Permission::EssBatch => "ess_batch",
            Permission::WriterPurchase => "writer_purchase",
            Permission::Writers => "writers",
        }
    }
}

/// A staff ID allowed to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    /// The staff ID.
    pub staff_id: String,
    /// Its department ID.
    pub department_id: String,
}

/// Checks that `staff_id` exists, is active, is bound to `warehouse_code` and holds `permission`.
pub async fn require(
    db: &mut PgConnection,
    staff_id: &str,
    warehouse_code: &str,
    permission: Permission,
) -> Result<Staff, JobError> {
    let row: Option<(String, bool, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT s.department_id, s.active, sw.permissions \
         FROM inventory.staff s \
         LEFT JOIN inventory.staff_warehouses sw ON sw.staff_id = s.staff_id AND sw.warehouse_code = $2 \
         WHERE s.staff_id = $1",
    )
    .bind(staff_id)
    .bind(warehouse_code)
    .fetch_optional(&mut *db)
    .await?;
    let Some((department_id, active, permissions)) = row else {
        return Err(JobError::reject(reasons::STAFF_UNKNOWN));
    };
    if !active {
        return Err(JobError::reject(reasons::STAFF_UNKNOWN));
    }
    let Some(permissions) = permissions else {
        return Err(JobError::reject(reasons::STAFF_NOT_BOUND));
    };
    if !permissions.iter().any(|held| held == permission.as_str()) {
        return Err(JobError::reject(reasons::STAFF_NOT_PERMITTED));
    }
    Ok(Staff {
        staff_id: staff_id.to_owned(),
        department_id,
    })
}
