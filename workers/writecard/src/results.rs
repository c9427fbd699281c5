//! What outlets report back: card reads (enriched with what the inventory knows) and write
//! results (checked before the card counts as written), and outlet work the broker
//! dead-lettered because no writer took it in time.
//!
//! Every result must come from the broker user of the outlet it names (the broker validates
//! `user_id` against the connection; we check it names the right outlet). A write counts only
//! when the card's answer to the challenge matches the card's keys. A result repeated for the
//! same script gets the same answer and changes nothing.

use simflow_card::profile::{self, AuthCheck, Challenge};
use simflow_carddata::kek::KekRing;
use simflow_inventory::writing::{self, Cause, Mark};
use simflow_runtime::{JobContext, JobError, Outcome};
use simflow_schemas::card::{CardRead, CardReadRequest, OutletCardRead, ReaderOutcome};
use simflow_schemas::common::ClerkMessage;
use simflow_schemas::outlet::{OutletHeartbeat, OutletKeyRotated};
use simflow_schemas::writecard::{
    CardWriteFailed, CardWriteState, WriteOutcome, WriteResult, WriteScriptEnvelope,
};
use simflow_schemas::writers::{ForeignReaderAction, ForeignReaderSeen};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::foreign_reader::{self, ReaderCheck, Sighting};
use crate::numbers;
use crate::orders;
use crate::outlets::{self, OutletState};
use crate::reasons;
use crate::request::written_event;
use crate::states::{OrderState, ScriptState};
use simflow_inventory::states::CardState;

#[derive(Debug, sqlx::FromRow)]
struct ScriptRow {
    order_id: Uuid,
    outlet_code: String,
    iccid: String,
    rand: Vec<u8>,
    autn: Vec<u8>,
    state: ScriptState,
    answer: Option<sqlx::types::Json<Outcome>>,
}

async fn lock_script(
    db: &mut PgConnection,
    script_id: Uuid,
) -> Result<Option<ScriptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, outlet_code, iccid, rand, autn, state, answer FROM writecard.scripts WHERE script_id = $1 FOR UPDATE",
    )
    .bind(script_id)
    .fetch_optional(db)
    .await
}

/// Refuses a result whose validated sender is not the named outlet's broker user (as recorded
/// when the outlet was provisioned).
pub(crate) async fn check_sender(
    db: &mut PgConnection,
    context: &JobContext,
    outlet_code: &str,
) -> Result<(), JobError> {
    let user = outlets::get(db, outlet_code)
        .await?
        .map(|outlet| outlet.broker_user);
    if user.is_some() && context.user_id == user {
        Ok(())
    } else {
        tracing::error!(outlet = outlet_code, user_id = ?context.user_id, "result not sent by the outlet it names");
        Err(JobError::needs_ops(reasons::RESULT_NOT_FROM_OUTLET))
    }
}

pub(crate) async fn settle_script(
    db: &mut PgConnection,
    script_id: Uuid,
    state: ScriptState,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE writecard.scripts SET state = $2, settled_at = now(), answer = $3 WHERE script_id = $1")
        .bind(script_id)
        .bind(state)
        .bind(sqlx::types::Json(outcome))
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) fn write_failed(
    order_id: Uuid,
    outlet_code: &str,
    iccid: &str,
    card_state: CardWriteState,
    reason: ClerkMessage,
) -> Outcome {
    let event = CardWriteFailed {
        order_id,
        outlet_code: outlet_code.to_owned(),
        iccid: iccid.to_owned(),
        card_state,
        reason,
    };
    Outcome::event(&event)
}

/// Withdraws a card that holds data nobody will activate: marked damaged, its IMSI retired
/// (it may be on the card); the order keeps its number for another card.
async fn withdraw(
    db: &mut PgConnection,
    order: &orders::Order,
    iccid: &str,
    cause: Cause<'_>,
    reason: ClerkMessage,
) -> Result<(ScriptState, Outcome), JobError> {
    writing::mark(db, iccid, Mark::Damaged, cause).await?;
    numbers::retire_imsi(db, &order.imsi).await?;
    Ok((
        ScriptState::Damaged,
        write_failed(
            order.order_id,
            &order.outlet_code,
            iccid,
            CardWriteState::Damaged,
            reason,
        ),
    ))
}

/// Handles `writecard.result.v1`.
pub async fn write_result(
    keks: &KekRing,
    context: &JobContext,
    result: WriteResult,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    check_sender(db, context, &result.outlet_code).await?;
    let Some(script) = lock_script(db, result.script_id).await? else {
        return Err(JobError::needs_ops(reasons::UNKNOWN_SCRIPT));
    };
    if script.outlet_code != result.outlet_code || script.order_id != result.order_id {
        return Err(JobError::needs_ops(reasons::RESULT_NOT_FROM_OUTLET));
    }
    if let Some(stored) = script
        .answer
        .as_ref()
        .filter(|_| script.state.is_answered())
    {
        return Ok(stored.0.clone());
    }
    let Some(order) = orders::lock(db, script.order_id).await? else {
        return Err(JobError::needs_ops(reasons::ORDER_UNKNOWN));
    };
    let reference = result.script_id.to_string();
    let cause = Cause {
        reference: &reference,
        staff_id: None,
        job_message_id: &context.message_id,
    };
    let (state, outcome) = match result.outcome {
        WriteOutcome::Written {
            auth_answer,
            apdu_count,
        } => {
            if result.iccid != script.iccid {
                return Err(JobError::needs_ops(reasons::RESULT_NOT_FROM_OUTLET));
            }
            let secrets = match simflow_carddata::keys::fetch(&mut *db, keks, &script.iccid).await {
                Ok(Some(secrets)) => secrets,
                Ok(None) => return Err(JobError::needs_ops(reasons::WRITE_SCRIPT_MISSING)),
                Err(simflow_carddata::keys::FetchError::Database(error)) => {
                    return Err(error.into());
                }
                Err(_) => return Err(JobError::needs_ops(reasons::CARD_DATA_UNREADABLE)),
            };
            let challenge = Challenge {
                rand: script
                    .rand
                    .as_slice()
                    .try_into()
                    .map_err(|_| JobError::needs_ops(reasons::UNKNOWN_SCRIPT))?,
                autn: script
                    .autn
                    .as_slice()
                    .try_into()
                    .map_err(|_| JobError::needs_ops(reasons::UNKNOWN_SCRIPT))?,
            };
            let checked = hex::decode(&auth_answer).ok().map(|answer| {
                profile::check_auth_answer(
                    secrets.ki.bytes(),
                    secrets.opc.bytes(),
                    &challenge,
                    &answer,
                )
            });
            match checked {
                Some(Ok(auth)) if order.state != OrderState::Cancelled => {
                    if let AuthCheck::Resynchronised { sqn_ms } = &auth {
                        let mut bytes = [0u8; 8];
                        bytes[8 - sqn_ms.len().min(8)..]
                            .copy_from_slice(&sqn_ms[..sqn_ms.len().min(8)]);
                        sqlx::query("UPDATE writecard.card_sqn SET sqn = greatest(sqn, $2) WHERE iccid = $1")
                            .bind(&script.iccid)
                            .bind(i64::from_be_bytes(bytes))
                            .execute(&mut *db)
                            .await?;
                    }
                    if !writing::mark(db, &script.iccid, Mark::Written, cause).await? {
                        return Err(JobError::needs_ops(reasons::CARD_STATE_INCONSISTENT));
                    }
                    sqlx::query("UPDATE writecard.orders SET state = $2, card_written = true, written_at = now() WHERE order_id = $1")
                        .bind(order.order_id)
                        .bind(OrderState::Written)
                        .execute(&mut *db)
                        .await?;
                    tracing::info!(order = %order.order_id, iccid = %script.iccid, apdu_count, "card written and verified");
                    let mut written = order.clone();
                    written.iccid = script.iccid.clone();
                    (ScriptState::Written, written_event(&written))
                }
                Some(Ok(_)) => {
                    // Written after the order was cancelled: the card holds data nobody will
                    // activate; it is withdrawn.
                    withdraw(
                        db,
                        &order,
                        &script.iccid,
                        cause,
                        reasons::ORDER_CANCELLED.message(),
                    )
                    .await?
                }
                _ => {
                    // The card answered with other keys (or garbage): it must never reach a
                    // customer. Its IMSI went with it; the order keeps its number for another card.
                    tracing::error!(order = %order.order_id, iccid = %script.iccid, "the card failed the authentication check");
                    withdraw(
                        db,
                        &order,
                        &script.iccid,
                        cause,
                        reasons::AUTH_FAILED.message(),
                    )
                    .await?
                }
            }
        }
        WriteOutcome::Failed {
            card_state: CardWriteState::Untouched,
            reason,
        } => (
            ScriptState::Failed,
            write_failed(
                order.order_id,
                &order.outlet_code,
                &script.iccid,
                CardWriteState::Untouched,
                reason,
            ),
        ),
        WriteOutcome::Failed {
            card_state: CardWriteState::Damaged,
            reason,
        } => withdraw(db, &order, &script.iccid, cause, reason).await?,
    };
    // The card is recorded as it is whatever the reader; a reader the writer ledger has not
    // issued to this outlet is flagged beside it, never refused (`foreign_reader.rs`).
    let reader = result.reader.as_ref();
    let outcome = match foreign_reader::check(db, &result.outlet_code, reader).await? {
        ReaderCheck::Issued => outcome,
        ReaderCheck::Foreign { issued_to } => {
            let sighting = Sighting {
                seen_in: ForeignReaderSeen::WriteResult,
                script_id: Some(result.script_id),
                action: ForeignReaderAction::Flagged,
            };
            let flagged =
                foreign_reader::flag(db, &result.outlet_code, reader, issued_to, sighting).await?;
            outcome.and_event(&flagged)
        }
    };
    sqlx::query("UPDATE writecard.scripts SET reader_serial = $2 WHERE script_id = $1")
        .bind(result.script_id)
        .bind(reader.and_then(|reader| reader.serial.as_deref()))
        .execute(&mut *db)
        .await?;
    settle_script(db, result.script_id, state, &outcome).await?;
    Ok(outcome)
}

/// Handles `card.read_request.v1` from upstream: forwards it, unchanged, to the outlet's queue
/// (upstream may not write to the outlets' exchange). An unknown or revoked outlet is refused;
/// the request expires in the outlet's queue like any outlet work.
pub async fn forward_read(
    read: CardReadRequest,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    match outlets::get_shared(db, &read.outlet_code)
        .await?
        .map(|outlet| outlet.state())
    {
        Some(OutletState::Active) => {}
        Some(OutletState::Suspended) => return Err(JobError::reject(reasons::OUTLET_SUSPENDED)),
        Some(OutletState::Revoked) | None => return Err(JobError::reject(reasons::OUTLET_UNKNOWN)),
    }
    Ok(Outcome::nothing().and_outlet_work(&read.outlet_code.clone(), &read, None))
}

/// Handles `outlet.card_read.v1`: the outlet's raw read, enriched with the inventory.
pub async fn card_read(
    context: &JobContext,
    read: OutletCardRead,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    check_sender(db, context, &read.outlet_code).await?;
    let outlet = outlets::get(db, &read.outlet_code).await?;
    let answer = match read.outcome {
        ReaderOutcome::Error { error } => CardRead {
            request_id: read.request_id,
            outlet_code: read.outlet_code.clone(),
            iccid: None,
            card_type: None,
            writable: false,
            problem: Some(error),
        },
        ReaderOutcome::Read { iccid, blank, .. } => {
            let card = writing::card(db, &iccid).await?;
            let problem = match (&card, &outlet) {
                (None, _) => Some(reasons::CARD_UNKNOWN.message()),
                (Some(card), Some(outlet))
                    if card.agent_code.as_deref() != Some(outlet.agent_code.as_str()) =>
                {
                    Some(reasons::CARD_LOCATION_MISMATCH.message())
                }
                (Some(card), _) if !blank || card.state != CardState::Blank => {
                    Some(reasons::CARD_UNUSABLE.message())
                }
                (_, None) => Some(reasons::OUTLET_UNKNOWN.message()),
                _ => None,
            };
            CardRead {
                request_id: read.request_id,
                outlet_code: read.outlet_code.clone(),
                card_type: card.map(|card| card.card_type),
                iccid: Some(iccid),
                writable: problem.is_none(),
                problem,
            }
        }
    };
    Ok(Outcome::event(&answer))
}

/// Handles outlet work the broker dead-lettered: expired scripts and read requests are
/// reported to the clerk; work an outlet rejected waits for ops.
pub async fn expired_write(
    context: &JobContext,
    envelope: WriteScriptEnvelope,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    if context.death_reason.as_deref() != Some("expired") {
        return Err(JobError::needs_ops(reasons::OUTLET_REFUSED_WORK));
    }
    let Some(script) = lock_script(db, envelope.script_id).await? else {
        return Err(JobError::needs_ops(reasons::UNKNOWN_SCRIPT));
    };
    if let Some(stored) = script.answer.as_ref() {
        return Ok(stored.0.clone());
    }
    let outcome = write_failed(
        script.order_id,
        &script.outlet_code,
        &script.iccid,
        CardWriteState::Untouched,
        reasons::SCRIPT_EXPIRED.message(),
    );
    if script.state == ScriptState::Sent {
        settle_script(db, envelope.script_id, ScriptState::Expired, &outcome).await?;
    }
    Ok(outcome)
}

/// An expired read request is answered as a read that could not happen.
pub async fn expired_read(
    context: &JobContext,
    request: CardReadRequest,
) -> Result<Outcome, JobError> {
    if context.death_reason.as_deref() != Some("expired") {
        return Err(JobError::needs_ops(reasons::OUTLET_REFUSED_WORK));
    }
    let answer = CardRead {
        request_id: request.request_id,
        outlet_code: request.outlet_code,
        iccid: None,
        card_type: None,
        writable: false,
        problem: Some(reasons::READ_EXPIRED.message()),
    };
    Ok(Outcome::event(&answer))
}

/// Handles `outlet.heartbeat.v1`: the node is alive. `last_seen` is the centre's clock when the
/// heartbeat is handled (the node's clock is only the node's word); a revoked outlet's late
/// heartbeat changes nothing. Answers nothing.
pub async fn heartbeat(
    context: &JobContext,
    heartbeat: OutletHeartbeat,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    check_sender(db, context, &heartbeat.outlet_code).await?;
    sqlx::query(
        "UPDATE writecard.outlets SET last_seen = greatest(last_seen, $2), node_version = $3 \
         WHERE outlet_code = $1 AND active",
    )
    .bind(&heartbeat.outlet_code)
    .bind(context.received_at)
    .bind(&heartbeat.node_version)
    .execute(&mut *db)
    .await?;
    if heartbeat.key_fingerprint.is_some() {
        let recorded = outlets::get(db, &heartbeat.outlet_code)
            .await?
            .map(|outlet| outlet.key_fingerprint);
        if recorded != heartbeat.key_fingerprint {
            tracing::warn!(outlet = %heartbeat.outlet_code, node_key = ?heartbeat.key_fingerprint, centre_key = ?recorded, "the node holds another key than the centre seals to");
        }
    }
    Ok(Outcome::nothing())
}

/// Handles `outlet.key_rotated.v1`: the node made a new key pair; scripts are sealed to the new
/// public key from this commit on (the centre only ever seals to the current key, so never
/// again to the old one). Only the outlet's own broker user can say so, and only from the key
/// the centre seals to now; the same announcement again changes nothing.
pub async fn key_rotated(
    context: &JobContext,
    rotated: OutletKeyRotated,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    check_sender(db, context, &rotated.outlet_code).await?;
    let key = simflow_seal::OutletPublicKey::from_base64(&rotated.public_key)
        .map_err(|_| JobError::needs_ops(reasons::KEY_ROTATION_REFUSED))?;
    let by = context.user_id.clone().unwrap_or_default();
    match outlets::record_rotation(db, &rotated, &key, &by).await? {
        outlets::Rotation::Recorded | outlets::Rotation::AlreadyCurrent => Ok(Outcome::nothing()),
        outlets::Rotation::FromUnknownKey => {
            tracing::error!(outlet = %rotated.outlet_code, previous = %rotated.previous_fingerprint, "a key rotation from a key the centre does not seal to");
            Err(JobError::needs_ops(reasons::KEY_ROTATION_REFUSED))
        }
    }
}
