//! A write request (写卡): the checks, the reservations, the write script, and its route to the
//! outlet's queue, sealed for that outlet and expiring.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use simflow_card::profile::{self, Personalisation};
use simflow_carddata::kek::KekRing;
use simflow_runtime::create_once::{self, Creates};
use simflow_runtime::{JobContext, JobError, Outcome};
use simflow_schemas::writecard::{CardWritten, WriteRequest, WriteScriptEnvelope};
use simflow_seal::OutletPublicKey;
use sqlx::PgConnection;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::foreign_reader;
use crate::numbers;
use crate::orders::{self, Order};
use crate::outlets;
use crate::reasons;
use crate::settings::WritecardSettings;
use crate::states::{OrderState, ScriptState};
use simflow_inventory::states::CardState;

/// AMF of the challenges (separation bit set, as for E-UTRAN).
const AMF: [u8; 2] = [0x80, 0x00];

/// SQN step: SEQ + 1 with a 5-bit IND of 0 (3GPP TS 33.102 Annex C).
const SQN_STEP: i64 = 32;

const SCRIPT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7c1d_44a0_5b6e_4f21_9d3e_8a0b_1c2d_3e4f);

/// The event answering a write request for an order whose card is already written.
pub fn written_event(order: &Order) -> Outcome {
    let event = CardWritten {
        order_id: order.order_id,
        outlet_code: order.outlet_code.clone(),
        iccid: order.iccid.clone(),
        msisdn: order.msisdn.clone(),
    };
    Outcome::event(&event)
}

fn sqn_bytes(sqn: i64) -> [u8; 6] {
    let bytes = sqn.to_be_bytes();
    let mut sqn = [0u8; 6];
    sqn.copy_from_slice(&bytes[2..]);
    sqn
}

/// Handles `writecard.request.v1`.
pub async fn handle(
    settings: &WritecardSettings,
    keks: &KekRing,
    context: &JobContext,
    request: WriteRequest,
    db: &mut PgConnection,
) -> Result<Outcome, JobError> {
    create_once::lock(db, Creates::Order, request.order_id).await?;
    // Locked to share: a suspension or revocation waits until this request is settled, so no
    // script reaches an outlet after it was revoked.
    let Some(outlet) = outlets::get_shared(db, &request.outlet_code)
        .await?
        .filter(|outlet| outlet.active)
    else {
        return Err(JobError::reject(reasons::OUTLET_UNKNOWN));
    };
    let same = |order: &Order| {
        order.outlet_code == request.outlet_code
            && order.msisdn == request.msisdn
            && order.customer_name == request.customer_name
            && order.package_code == request.package_code
    };
    let stored = orders::lock(db, request.order_id).await?;
    let existing = create_once::compare(stored, same, reasons::ORDER_CONFLICT)?;
    if let Some(order) = &existing {
        match order.state {
            OrderState::Requested => {}
            OrderState::Cancelled => return Err(JobError::reject(reasons::ORDER_CANCELLED)),
            // The card of this order is written already: answer that, write nothing.
            OrderState::Written | OrderState::Presubmitted | OrderState::Submitted => {
                return Ok(written_event(order));
            }
        }
    }

    if outlet.suspended {
        return Err(JobError::reject(reasons::OUTLET_SUSPENDED));
    }

    // The reader: under `foreign_reader = "refuse"`, the one issued to this outlet.
    foreign_reader::admit_request(settings.foreign_reader, &request.outlet_code, db).await?;
    // The card: issued to this outlet's agent, still blank.
    let Some(card) = simflow_inventory::writing::card_for_write(db, &request.iccid).await? else {
        return Err(JobError::reject(reasons::CARD_UNKNOWN));
    };
    if card.agent_code.as_deref() != Some(outlet.agent_code.as_str()) {
        return Err(JobError::reject(reasons::CARD_LOCATION_MISMATCH));
    }
    if card.state != CardState::Blank {
        return Err(JobError::reject(reasons::CARD_UNUSABLE));
    }
    // The clerk: same department as the agent that collected the card.
    let agent = simflow_inventory::writing::agent(db, &outlet.agent_code)
        .await?
        .ok_or_else(|| JobError::reject(reasons::OUTLET_UNKNOWN))?;
    if !agent.active {
        return Err(JobError::reject(reasons::AGENT_INACTIVE));
    }
    let Some(department) =
        simflow_inventory::writing::staff_department(db, &request.staff_id).await?
    else {
        return Err(JobError::reject(reasons::STAFF_UNKNOWN));
    };
    if department != agent.department_id {
        return Err(JobError::reject(reasons::CLERK_DEPARTMENT_MISMATCH));
    }
    let Some(package) = orders::package(db, &request.package_code).await? else {
        return Err(JobError::reject(reasons::PACKAGE_UNKNOWN));
    };

    // The reservations: the chosen number and an IMSI, held by the order.
    let order = match existing {
        Some(mut order) => {
            if !numbers::imsi_usable(db, &order.imsi, order.order_id).await? {
                // The previous card of this order took the IMSI with it (damaged): a new one.
                order.imsi = numbers::reserve_imsi(db, order.order_id)
                    .await?
                    .ok_or_else(|| JobError::needs_ops(reasons::IMSI_POOL_EMPTY))?;
            }
            order.iccid = request.iccid.clone();
            order.card_type = card.card_type.clone();
            orders::switch_card(db, &order).await?;
            order
        }
        None => {
            if !numbers::reserve_msisdn(db, &request.msisdn, request.order_id).await? {
                return Err(JobError::reject(reasons::NUMBER_UNAVAILABLE));
            }
            let imsi = numbers::reserve_imsi(db, request.order_id)
                .await?
                .ok_or_else(|| JobError::needs_ops(reasons::IMSI_POOL_EMPTY))?;
            orders::create(
                db,
                &request,
                &outlet.agent_code,
                &card.card_type,
                &imsi,
                &package.package_code,
            )
            .await?
        }
    };

    // The card data: the card's keys, or the deck's "load the card data file" message.
    let secrets = match simflow_carddata::keys::fetch(&mut *db, keks, &request.iccid).await {
        Ok(Some(secrets)) => secrets,
        Ok(None) => return Err(JobError::needs_ops(reasons::WRITE_SCRIPT_MISSING)),
        Err(simflow_carddata::keys::FetchError::Database(error)) => return Err(error.into()),
        Err(error) => {
            tracing::error!(iccid = %request.iccid, %error, "card data cannot be opened");
            return Err(JobError::needs_ops(reasons::CARD_DATA_UNREADABLE));
        }
    };

    // The challenge: a fresh RAND and the next SQN for this card.
    let sqn: i64 = sqlx::query_scalar(
        "INSERT INTO writecard.card_sqn (iccid, sqn) VALUES ($1, $2) \
         ON CONFLICT (iccid) DO UPDATE SET sqn = writecard.card_sqn.sqn + $2 RETURNING sqn",
    )
    .bind(&request.iccid)
    .bind(SQN_STEP)
    .fetch_one(&mut *db)
    .await?;
    let mut rand = [0u8; 16];
    rand::rng().fill_bytes(&mut rand);
    let challenge = profile::make_challenge(
        secrets.ki.bytes(),
        secrets.opc.bytes(),
        &rand,
        &sqn_bytes(sqn),
        &AMF,
    );

    let mcc_mnc = (order.imsi.len() >= 3 + settings.mnc_digits).then(|| {
        (
            order.imsi[..3].to_owned(),
            order.imsi[3..3 + settings.mnc_digits].to_owned(),
        )
    });
    let personalisation = Personalisation {
        iccid: request.iccid.clone(),
        imsi: order.imsi.clone(),
        msisdn: order.msisdn.clone(),
        ki: *secrets.ki.bytes(),
        opc: *secrets.opc.bytes(),
        adm1: secrets.adm1.clone(),
        spn: Some(settings.spn.clone()),
        mcc_mnc,
        smsp: settings.smsp.clone(),
    };
    let Some(family) = settings.family_for(&card.card_type) else {
        tracing::error!(card_type = %card.card_type, family = %settings.family_name_for(&card.card_type), "unknown card family in the configuration");
        return Err(JobError::needs_ops(reasons::SCRIPT_BUILD_FAILED));
    };
    let script = family
        .build_write_script(&personalisation, &challenge)
        .map_err(|error| {
            tracing::error!(iccid = %request.iccid, %error, "the write script could not be built");
            JobError::needs_ops(reasons::SCRIPT_BUILD_FAILED)
        })?;
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&script).map_err(|error| JobError::Transient(error.into()))?,
    );
    let key = OutletPublicKey::from_base64(&outlet.public_key)
        .map_err(|_| JobError::needs_ops(reasons::OUTLET_UNKNOWN))?;
    let sealed_script = key
        .seal(&plaintext)
        .map_err(|error| JobError::Transient(error.into()))?;

    let script_id = Uuid::new_v5(&SCRIPT_ID_NAMESPACE, context.message_id.as_bytes());
    let ttl = Duration::from_secs(settings.script_ttl_seconds);
    let not_after: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO writecard.scripts (script_id, order_id, outlet_code, iccid, family, rand, autn, sqn, state, not_after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, now() + make_interval(secs => $9)) RETURNING not_after",
    )
    .bind(script_id)
    .bind(order.order_id)
    .bind(&outlet.outlet_code)
    .bind(&request.iccid)
    .bind(&script.family)
    .bind(challenge.rand.as_slice())
    .bind(challenge.autn.as_slice())
    .bind(sqn)
    .bind(ttl.as_secs_f64())
    .bind(ScriptState::Sent)
    .fetch_one(&mut *db)
    .await?;
    let envelope = WriteScriptEnvelope {
        script_id,
        order_id: order.order_id,
        outlet_code: outlet.outlet_code.clone(),
        iccid: request.iccid.clone(),
        not_after,
        sealed_for: key.fingerprint(),
        sealed_script,
    };
    tracing::info!(order = %order.order_id, script = %script_id, outlet = %outlet.outlet_code, steps = script.steps.len(), "write script routed");
    Ok(Outcome::nothing().and_outlet_work(&outlet.outlet_code, &envelope, Some(ttl)))
}

#[cfg(test)]
mod tests {
    use super::sqn_bytes;

    #[test]
    fn sqn_is_the_low_48_bits_big_endian() {
        assert_eq!(sqn_bytes(32), [0, 0, 0, 0, 0, 32]);
        assert_eq!(sqn_bytes(0x0102_0304_0506), [1, 2, 3, 4, 5, 6]);
    }
}
