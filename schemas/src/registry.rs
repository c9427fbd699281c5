//! The list of every message type: its `type` name, where it travels, and how to decode it.
//!
//! One declaration (`contract!`, below) is the registry: from it come the [`Message`] impls
//! (type name and where each message is published), [`all`] and the routing key of every
//! outcome event ([`Event`]). A second (`job_sets!`) groups the consumed messages into one
//! closed enum per consuming queue ([`TransferJob`], [`IssueJob`], …, each a [`JobSet`]). A consumer calls
//! [`JobSet::decode`] with the AMQP `type` property and the body; an unknown type, a type that
//! belongs to another queue, or a body that does not match its schema is an error, never a guess.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::card::{CardRead, CardReadRequest, OutletCardRead};
use crate::cardfile::{CardFileImport, CardFileImported};
use crate::events::{JobFailed, JobRejected};
use crate::issue::{IssueCommit, IssueCommitted, IssuePrepare, IssuePrepared};
use crate::outlet::{OutletHeartbeat, OutletKeyRotated};
use crate::returns::{ReturnByList, ReturnByRange, ReturnCommitted, ReturnQueried, ReturnQuery};
use crate::topology::JobQueue;
use crate::transfer::{
    ApprovalStage, TransferApproveIn, TransferApproveOut, TransferApproved, TransferCreate,
    TransferCreated,
};
use crate::writecard::{
    CardWriteFailed, CardWritten, OrderActivated, OrderCancel, OrderCancelled, OrderPresubmit,
    OrderPresubmitted, OrderSubmit, WriteRequest, WriteResult, WriteScriptEnvelope,
};
use crate::writers::{
    ForeignReader, OutletReaderReport, WriterIssue, WriterMoved, WriterMovement, WriterPurchase,
    WriterRepair, WriterReturn, WriterWriteOff,
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

/// An outcome event with a routing key of its own (the shared `job.rejected.v1` and
/// `job.failed.v1` take theirs from the queue: [`event_routing_key`]).
pub trait Event: Message {
    /// The routing key this event is published with on the events exchange.
    fn routing_key(&self) -> &'static str;
}

/// The messages one queue's consumer takes, as one closed enum.
pub trait JobSet: Sized + std::fmt::Debug + Clone + Send + Sync + 'static {
    /// Every `type` this set takes.
    const TYPES: &'static [&'static str];
    /// Decodes a body by its AMQP `type` property.
    fn decode(message_type: &str, body: &[u8]) -> Result<Self, DecodeError>;
    /// The message's `type`.
    fn message_type(&self) -> &'static str;
    /// The business id the message names (transfer, batch, order …), for events and logs.
    fn subject_id(&self) -> String;
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
    /// Checks that a body decodes as this type (for contract tests and tools).
    pub check: fn(&[u8]) -> Result<(), serde_json::Error>,
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
    /// The `type` is in the contract but this queue does not take it.
    #[error("{message_type} does not belong on this queue")]
    NotForThisQueue {
        /// The type the message claimed.
        message_type: String,
    },
    /// The body is not valid JSON for its type.
    #[error("malformed {message_type} body: {source}")]
    Malformed {
        /// The type the body claimed.
        message_type: String,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// How every message schema is generated: from `settings` (a JSON Schema dialect), with each
/// integer bounded by its Rust type ([`crate::common::integer_bounds`]).
pub fn schema_settings(settings: SchemaSettings) -> SchemaSettings {
    settings.with_transform(RecursiveTransform(crate::common::integer_bounds))
}

fn info<M: Message>(rust_name: &'static str) -> MessageInfo {
    MessageInfo {
        message_type: M::TYPE,
        role: M::ROLE,
        rust_name,
        schema: || {
            schema_settings(SchemaSettings::draft2020_12())
                .into_generator()
                .into_root_schema_for::<M>()
        },
        subschema: |generator| generator.subschema_for::<M>(),
        check: |body| serde_json::from_slice::<M>(body).map(drop),
    }
}

/// The registry: every message that is consumed (with where it is published), every event
/// with its routing keys, and the two events every queue shares.
macro_rules! contract {
    (
        consumed {$(
            $ty:ty = $name:literal, $role:expr;
        )*}
        events {$(
            $event:ty = $event_name:literal, [$($key:literal),*] $(, by $route:expr)?;
        )*}
        shared events {$(
            $shared:ty = $shared_name:literal, [$($shared_key:literal),*];
        )*}
    ) => {
        $(impl Message for $ty {
            const TYPE: &'static str = $name;
            const ROLE: MessageRole = $role;
        })*

        $(impl Message for $event {
            const TYPE: &'static str = $event_name;
            const ROLE: MessageRole = MessageRole::Event(&[$($key),*]);
        }

        impl Event for $event {
            fn routing_key(&self) -> &'static str {
                $(
                    let route: fn(&$event) -> &'static str = $route;
                    return route(self);
                )?
                #[allow(unreachable_code)]
                [$($key),*][0]
            }
        })*

        $(impl Message for $shared {
            const TYPE: &'static str = $shared_name;
            const ROLE: MessageRole = MessageRole::Event(&[$($shared_key),*]);
        })*

        /// Every message type of the contract, in a stable order.
        pub fn all() -> &'static [MessageInfo] {
            static ALL: std::sync::LazyLock<Vec<MessageInfo>> = std::sync::LazyLock::new(|| {
                [
                    $(info::<$ty>(stringify!($ty)),)*
                    $(info::<$shared>(stringify!($shared)),)*
                    $(info::<$event>(stringify!($event)),)*
                ]
                .into()
            });
            &ALL
        }
    };
}

/// One closed enum per consuming queue, over messages of the registry.
macro_rules! job_sets {
    ($(
        $(#[$enum_doc:meta])*
        $set:ident {$(
            $(#[$variant_doc:meta])*
            $variant:ident($ty:ty), subject $subject:expr;
        )*}
    )*) => {$(
        $(#[$enum_doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $set {
            $($(#[$variant_doc])* $variant($ty),)*
        }

        $(impl From<$ty> for $set {
            fn from(message: $ty) -> $set {
                $set::$variant(message)
            }
        })*

        impl JobSet for $set {
            const TYPES: &'static [&'static str] = &[$(<$ty as Message>::TYPE),*];

            fn decode(message_type: &str, body: &[u8]) -> Result<Self, DecodeError> {
                $(if message_type == <$ty as Message>::TYPE {
                    return serde_json::from_slice::<$ty>(body)
                        .map($set::$variant)
                        .map_err(|source| DecodeError::Malformed {
                            message_type: message_type.to_owned(),
                            source,
                        });
                })*
                Err(not_here(message_type))
            }

            fn message_type(&self) -> &'static str {
                match self {
                    $($set::$variant(_) => <$ty as Message>::TYPE,)*
                }
            }

            fn subject_id(&self) -> String {
                match self {
                    $($set::$variant(message) => {
                        let subject: fn(&$ty) -> String = $subject;
                        subject(message)
                    })*
                }
            }
        }
    )*};
}

contract! {
    consumed {
        TransferCreate = "transfer.create.v1", MessageRole::Job(JobQueue::Transfer);
        TransferApproveOut = "transfer.approve_out.v1", MessageRole::Job(JobQueue::Transfer);
        TransferApproveIn = "transfer.approve_in.v1", MessageRole::Job(JobQueue::Transfer);
        IssuePrepare = "issue.prepare.v1", MessageRole::Job(JobQueue::Issue);
        IssueCommit = "issue.commit.v1", MessageRole::Job(JobQueue::Issue);
        WriterPurchase = "writer.purchase.v1", MessageRole::Job(JobQueue::Issue);
        WriterIssue = "writer.issue.v1", MessageRole::Job(JobQueue::Issue);
        WriterReturn = "writer.return.v1", MessageRole::Job(JobQueue::Issue);
        WriterRepair = "writer.repair.v1", MessageRole::Job(JobQueue::Issue);
        WriterWriteOff = "writer.write_off.v1", MessageRole::Job(JobQueue::Issue);
        ReturnByList = "return.by_list.v1", MessageRole::Job(JobQueue::Return);
        ReturnQuery = "return.query.v1", MessageRole::Job(JobQueue::Return);
        ReturnByRange = "return.by_range.v1", MessageRole::Job(JobQueue::Return);
        CardFileImport = "cardfile.import.v1", MessageRole::Job(JobQueue::CardFile);
        WriteRequest = "writecard.request.v1", MessageRole::Job(JobQueue::WriteCard);
        OrderPresubmit = "order.presubmit.v1", MessageRole::Job(JobQueue::WriteCard);
        OrderSubmit = "order.submit.v1", MessageRole::Job(JobQueue::WriteCard);
        OrderCancel = "order.cancel.v1", MessageRole::Job(JobQueue::WriteCard);
        // Upstream asks the centre; the centre forwards it, unchanged, to the outlet's queue.
        CardReadRequest = "card.read_request.v1", MessageRole::Job(JobQueue::WriteCard);
        WriteScriptEnvelope = "writecard.script.v1", MessageRole::OutletWork;
        OutletCardRead = "outlet.card_read.v1", MessageRole::OutletResult;
        WriteResult = "writecard.result.v1", MessageRole::OutletResult;
        OutletHeartbeat = "outlet.heartbeat.v1", MessageRole::OutletResult;
        OutletKeyRotated = "outlet.key_rotated.v1", MessageRole::OutletResult;
        OutletReaderReport = "outlet.reader_report.v1", MessageRole::OutletResult;
    }
    events {
        TransferCreated = "transfer.created.v1", ["transfer.created"];
        TransferApproved = "transfer.approved.v1", ["transfer.approved_out", "transfer.approved_in"],
            by |event| match event.stage {
                ApprovalStage::Out => "transfer.approved_out",
                ApprovalStage::In => "transfer.approved_in",
            };
        IssuePrepared = "issue.prepared.v1", ["issue.prepared"];
        IssueCommitted = "issue.committed.v1", ["issue.committed"];
        ReturnQueried = "return.queried.v1", ["return.queried"];
        ReturnCommitted = "return.committed.v1", ["return.committed"];
        CardFileImported = "cardfile.imported.v1", ["cardfile.imported"];
        CardRead = "card.read.v1", ["card.read"];
        CardWritten = "card.written.v1", ["card.written"];
        CardWriteFailed = "card.write_failed.v1", ["card.write_failed"];
        OrderPresubmitted = "order.presubmitted.v1", ["order.presubmitted"];
        OrderActivated = "order.activated.v1", ["order.activated"];
        OrderCancelled = "order.cancelled.v1", ["order.cancelled"];
        WriterMoved = "writer.moved.v1", ["writer.purchased", "writer.issued", "writer.returned",
            "writer.repair_out", "writer.repair_back", "writer.written_off"],
            by |event| match event.movement {
                WriterMovement::Purchased => "writer.purchased",
                WriterMovement::Issued => "writer.issued",
                WriterMovement::Returned => "writer.returned",
                WriterMovement::RepairOut => "writer.repair_out",
                WriterMovement::RepairBack => "writer.repair_back",
                WriterMovement::WrittenOff => "writer.written_off",
            };
        ForeignReader = "writer.foreign_reader.v1", ["writer.foreign_reader"];
    }
    shared events {
        JobRejected = "job.rejected.v1", ["*.rejected"];
        JobFailed = "job.failed.v1", ["*.failed"];
    }
}

job_sets! {
    /// Jobs on `simflow.transfer`.
    TransferJob {
        /// Create a transfer and hold its cards.
        Create(TransferCreate), subject |m| m.transfer_id.to_string();
        /// Approve a transfer out of its source warehouse.
        ApproveOut(TransferApproveOut), subject |m| m.transfer_id.to_string();
        /// Approve a transfer into its target warehouse.
        ApproveIn(TransferApproveIn), subject |m| m.transfer_id.to_string();
    }
    /// Jobs on `simflow.issue`.
    IssueJob {
        /// Check a batch issue and hold its cards.
        Prepare(IssuePrepare), subject |m| m.batch_id.to_string();
        /// Give a prepared batch to its agent.
        Commit(IssueCommit), subject |m| m.batch_id.to_string();
        /// Record a writer bought for a branch.
        WriterPurchase(WriterPurchase), subject |m| m.writer_serial.clone();
        /// Issue a writer to an outlet.
        WriterIssue(WriterIssue), subject |m| m.writer_serial.clone();
        /// Take a writer back from its outlet.
        WriterReturn(WriterReturn), subject |m| m.writer_serial.clone();
        /// Send a writer for repair, or take it back.
        WriterRepair(WriterRepair), subject |m| m.writer_serial.clone();
        /// Write a writer off.
        WriterWriteOff(WriterWriteOff), subject |m| m.writer_serial.clone();
    }
    /// Jobs on `simflow.return`.
    ReturnJob {
        /// Return listed cards (or an uploaded list).
        ByList(ReturnByList), subject |m| m.return_id.to_string();
        /// Look at a range before returning it.
        Query(ReturnQuery), subject |m| m.query_id.to_string();
        /// Return a range of cards.
        ByRange(ReturnByRange), subject |m| m.return_id.to_string();
    }
    /// Jobs on `simflow.cardfile`.
    CardFileJob {
        /// Import a card data file.
        Import(CardFileImport), subject |m| m.import_id.to_string();
    }
    /// Jobs on `simflow.writecard`.
    WriteCardJob {
        /// Write a card for an order.
        Request(WriteRequest), subject |m| m.order_id.to_string();
        /// Compute fees and the acceptance form.
        Presubmit(OrderPresubmit), subject |m| m.order_id.to_string();
        /// Open the line.
        Submit(OrderSubmit), subject |m| m.order_id.to_string();
        /// Cancel an order before submit.
        Cancel(OrderCancel), subject |m| m.order_id.to_string();
        /// Ask an outlet's reader to read the card in it (forwarded to the outlet).
        ReadRequest(CardReadRequest), subject |m| m.request_id.to_string();
    }
    /// Work for an outlet's writer: what outlet nodes consume, and what the broker
    /// dead-letters to `simflow.outlet-expired` when no writer took it in time.
    OutletWorkJob {
        /// Read the card in the reader (forwarded by the centre).
        ReadRequest(CardReadRequest), subject |m| m.request_id.to_string();
        /// Write a card with a script sealed for this outlet.
        WriteScript(WriteScriptEnvelope), subject |m| m.script_id.to_string();
    }
    /// Answers of outlet nodes, on `simflow.outlet-results`.
    OutletResultJob {
        /// What the reader found.
        CardRead(OutletCardRead), subject |m| m.request_id.to_string();
        /// How a write ended.
        WriteResult(WriteResult), subject |m| m.script_id.to_string();
        /// The node is alive.
        Heartbeat(OutletHeartbeat), subject |m| m.outlet_code.clone();
        /// The node has a new key pair.
        KeyRotated(OutletKeyRotated), subject |m| m.outlet_code.clone();
        /// The reader a node writes with, reported when it connects.
        ReaderReport(OutletReaderReport), subject |m| m.report_id.to_string();
    }
}

/// The `type`s a central queue's consumer takes: the closed enum of that queue.
/// Outlet queues take [`OutletWorkJob`]'s, which is what expires into `simflow.outlet-expired`.
pub fn job_types(queue: JobQueue) -> &'static [&'static str] {
    match queue {
        JobQueue::Transfer => TransferJob::TYPES,
        JobQueue::Issue => IssueJob::TYPES,
        JobQueue::Return => ReturnJob::TYPES,
        JobQueue::CardFile => CardFileJob::TYPES,
        JobQueue::WriteCard => WriteCardJob::TYPES,
        JobQueue::OutletResults => OutletResultJob::TYPES,
        JobQueue::OutletExpired => OutletWorkJob::TYPES,
    }
}

/// The error for a `type` a set does not take: another queue's, or no one's.
fn not_here(message_type: &str) -> DecodeError {
    if find(message_type).is_some() {
        DecodeError::NotForThisQueue {
            message_type: message_type.to_owned(),
        }
    } else {
        DecodeError::UnknownType(message_type.to_owned())
    }
}

/// The suffixes of the events every job queue shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedEvent {
    /// `job.rejected.v1`: a business answer; nothing changed.
    Rejected,
    /// `job.failed.v1`: the job waits for ops in its dead-letter queue.
    Failed,
}

/// The routing key of a shared event of a queue, e.g. `return.rejected`.
pub fn event_routing_key(queue: JobQueue, event: SharedEvent) -> String {
    let suffix = match event {
        SharedEvent::Rejected => "rejected",
        SharedEvent::Failed => "failed",
    };
    format!("{}.{suffix}", queue.key())
}

/// Looks up a message type by name.
pub fn find(message_type: &str) -> Option<MessageInfo> {
    all()
        .iter()
        .find(|info| info.message_type == message_type)
        .copied()
}
