//! The list of every message type: its `type` name, where it travels, and how to decode it.
//!
//! A consumer calls [`Job::decode`] with the AMQP `type` property and the body; an unknown type
//! or a body that does not match its schema is an error, never a guess.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::card::{CardRead, CardReadRequest, OutletCardRead};
use crate::cardfile::{CardFileImport, CardFileImported};
use crate::events::{JobFailed, JobRejected};
use crate::issue::{IssueCommit, IssueCommitted, IssuePrepare, IssuePrepared};
use crate::returns::{ReturnByList, ReturnByRange, ReturnCommitted, ReturnQueried, ReturnQuery};
use crate::topology::JobQueue;
use crate::transfer::{
    TransferApproveIn, TransferApproveOut, TransferApproved, TransferCreate, TransferCreated,
};
use crate::writecard::{
    CardWriteFailed, CardWritten, OrderActivated, OrderCancel, OrderCancelled, OrderPresubmit,
    OrderPresubmitted, OrderSubmit, WriteRequest, WriteResult, WriteScriptEnvelope,
};

/// Where a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRole {
    /// A job on a central queue, published to the jobs exchange with the queue's key.
    Job(JobQueue),
    /// Work for one outlet, published to the outlets exchange with the outlet code.
    OutletWork,
    /// An outlet's answer, published to the results exchange.
    OutletResult,
    /// An outcome event on the events exchange, with these routing keys
    /// (`*` stands for any job queue key).
    Event(&'static [&'static str]),
}

/// A message type of the wire contract.
pub trait Message: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The AMQP `type` property, e.g. `transfer.create.v1`.
    const TYPE: &'static str;
    /// Where it travels.
    const ROLE: MessageRole;
}

/// What the registry knows of one message type.
#[derive(Debug, Clone, Copy)]
pub struct MessageInfo {
    /// The AMQP `type` property.
    pub message_type: &'static str,
    /// Where it travels.
    pub role: MessageRole,
    /// The Rust type's name, for humans.
    pub rust_name: &'static str,
    /// Produces the message's standalone JSON Schema (draft 2020-12).
    pub schema: fn() -> Schema,
    /// Adds the message's schema to a generator and returns a reference to it.
    pub subschema: fn(&mut SchemaGenerator) -> Schema,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The `type` property is missing.
    #[error("the message has no type property")]
    MissingType,
    /// The `type` property names no message this contract knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The body is not valid JSON for its type.
    #[error("malformed {message_type} body: {source}")]
    Malformed {
        /// The type the body claimed.
        message_type: String,
        /// What serde said.
        source: serde_json::Error,
    },
}

macro_rules! impl_message {
    ($($ty:ty => $name:literal, $role:expr;)*) => {
        $(impl Message for $ty {
            const TYPE: &'static str = $name;
            const ROLE: MessageRole = $role;
        })*

        /// Every message type of the contract, in a stable order.
        pub fn all() -> Vec<MessageInfo> {
            vec![$(MessageInfo {
                message_type: $name,
                role: $role,
                rust_name: stringify!($ty),
                schema: || schemars::schema_for!($ty),
                subschema: |generator| generator.subschema_for::<$ty>(),
            }),*]
        }
    };
}

impl_message! {
    TransferCreate => "transfer.create.v1", MessageRole::Job(JobQueue::Transfer);
    TransferApproveOut => "transfer.approve_out.v1", MessageRole::Job(JobQueue::Transfer);
    TransferApproveIn => "transfer.approve_in.v1", MessageRole::Job(JobQueue::Transfer);
    IssuePrepare => "issue.prepare.v1", MessageRole::Job(JobQueue::Issue);
    IssueCommit => "issue.commit.v1", MessageRole::Job(JobQueue::Issue);
    ReturnByList => "return.by_list.v1", MessageRole::Job(JobQueue::Return);
    ReturnQuery => "return.query.v1", MessageRole::Job(JobQueue::Return);
    ReturnByRange => "return.by_range.v1", MessageRole::Job(JobQueue::Return);
    CardFileImport => "cardfile.import.v1", MessageRole::Job(JobQueue::CardFile);
    WriteRequest => "writecard.request.v1", MessageRole::Job(JobQueue::WriteCard);
    OrderPresubmit => "order.presubmit.v1", MessageRole::Job(JobQueue::WriteCard);
    OrderSubmit => "order.submit.v1", MessageRole::Job(JobQueue::WriteCard);
    OrderCancel => "order.cancel.v1", MessageRole::Job(JobQueue::WriteCard);
    CardReadRequest => "card.read_request.v1", MessageRole::OutletWork;
    WriteScriptEnvelope => "writecard.script.v1", MessageRole::OutletWork;
    OutletCardRead => "outlet.card_read.v1", MessageRole::OutletResult;
    WriteResult => "writecard.result.v1", MessageRole::OutletResult;
    JobRejected => "job.rejected.v1", MessageRole::Event(&["*.rejected"]);
    JobFailed => "job.failed.v1", MessageRole::Event(&["*.failed"]);
    TransferCreated => "transfer.created.v1", MessageRole::Event(&["transfer.created"]);
    TransferApproved => "transfer.approved.v1", MessageRole::Event(&["transfer.approved_out", "transfer.approved_in"]);
    IssuePrepared => "issue.prepared.v1", MessageRole::Event(&["issue.prepared"]);
    IssueCommitted => "issue.committed.v1", MessageRole::Event(&["issue.committed"]);
    ReturnQueried => "return.queried.v1", MessageRole::Event(&["return.queried"]);
    ReturnCommitted => "return.committed.v1", MessageRole::Event(&["return.committed"]);
    CardFileImported => "cardfile.imported.v1", MessageRole::Event(&["cardfile.imported"]);
    CardRead => "card.read.v1", MessageRole::Event(&["card.read"]);
    CardWritten => "card.written.v1", MessageRole::Event(&["card.written"]);
    CardWriteFailed => "card.write_failed.v1", MessageRole::Event(&["card.write_failed"]);
    OrderPresubmitted => "order.presubmitted.v1", MessageRole::Event(&["order.presubmitted"]);
    OrderActivated => "order.activated.v1", MessageRole::Event(&["order.activated"]);
    OrderCancelled => "order.cancelled.v1", MessageRole::Event(&["order.cancelled"]);
}

macro_rules! consumed {
    ($($variant:ident($ty:ty) => $subject:expr,)*) => {
        /// Every message a simflow worker consumes, decoded.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Job {
            $(#[doc = concat!("A `", stringify!($ty), "`.")] $variant($ty),)*
        }

        impl Job {
            /// Decodes a body by its AMQP `type` property.
            pub fn decode(message_type: &str, body: &[u8]) -> Result<Job, DecodeError> {
                $(if message_type == <$ty as Message>::TYPE {
                    return serde_json::from_slice::<$ty>(body)
                        .map(Job::$variant)
                        .map_err(|source| DecodeError::Malformed {
                            message_type: message_type.to_owned(),
                            source,
                        });
                })*
                Err(DecodeError::UnknownType(message_type.to_owned()))
            }

            /// The message's `type`.
            pub fn message_type(&self) -> &'static str {
                match self {
                    $(Job::$variant(_) => <$ty as Message>::TYPE,)*
                }
            }

            /// Where the message travels.
            pub fn role(&self) -> MessageRole {
                match self {
                    $(Job::$variant(_) => <$ty as Message>::ROLE,)*
                }
            }

            /// The business id the message names (transfer, batch, order …), for events and logs.
            pub fn subject_id(&self) -> Option<String> {
                match self {
                    $(Job::$variant(message) => {
                        let subject: fn(&$ty) -> String = $subject;
                        Some(subject(message))
                    })*
                }
            }
        }
    };
}

consumed! {
    TransferCreate(TransferCreate) => |m| m.transfer_id.to_string(),
    TransferApproveOut(TransferApproveOut) => |m| m.transfer_id.to_string(),
    TransferApproveIn(TransferApproveIn) => |m| m.transfer_id.to_string(),
    IssuePrepare(IssuePrepare) => |m| m.batch_id.to_string(),
    IssueCommit(IssueCommit) => |m| m.batch_id.to_string(),
    ReturnByList(ReturnByList) => |m| m.return_id.to_string(),
    ReturnQuery(ReturnQuery) => |m| m.query_id.to_string(),
    ReturnByRange(ReturnByRange) => |m| m.return_id.to_string(),
    CardFileImport(CardFileImport) => |m| m.import_id.to_string(),
    WriteRequest(WriteRequest) => |m| m.order_id.to_string(),
    OrderPresubmit(OrderPresubmit) => |m| m.order_id.to_string(),
    OrderSubmit(OrderSubmit) => |m| m.order_id.to_string(),
    OrderCancel(OrderCancel) => |m| m.order_id.to_string(),
    CardReadRequest(CardReadRequest) => |m| m.request_id.to_string(),
    WriteScript(WriteScriptEnvelope) => |m| m.script_id.to_string(),
    OutletCardRead(OutletCardRead) => |m| m.request_id.to_string(),
    WriteResult(WriteResult) => |m| m.script_id.to_string(),
}

/// The routing key of an event on the events exchange: its type without the version,
/// or `<queue key>.<suffix>` for the shared rejected/failed events.
pub fn event_routing_key(queue: JobQueue, suffix: &str) -> String {
    format!("{}.{suffix}", queue.key())
}

/// Looks up a message type by name.
pub fn find(message_type: &str) -> Option<MessageInfo> {
    all()
        .into_iter()
        .find(|info| info.message_type == message_type)
}
