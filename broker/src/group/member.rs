//! One member of a classic group, and the answers its parked JoinGroup and SyncGroup requests
//! receive.

use bytes::Bytes;
use tokio::sync::oneshot;

/// What a JoinGroup request is answered with (Kafka's JoinGroupResponseData before it is
/// shaped for the request's version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: i16,
    pub member_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    /// Every member and its metadata for the chosen protocol; only the leader gets them.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

impl JoinResult {
    /// An error answer with Kafka's defaults for the other fields.
    pub fn error(member_id: &str, code: i16) -> JoinResult {
        JoinResult {
            error: code,
            member_id: member_id.to_string(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// What a SyncGroup request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(code: i16) -> SyncResult {
        SyncResult {
            error: code,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A protocol a member supports, with its metadata, in the member's order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

pub struct ClassicMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    /// The parked JoinGroup of this member, if it is waiting for the join phase to end.
    pub awaiting_join: Option<oneshot::Sender<JoinResult>>,
    /// The parked SyncGroup of this member, if it is waiting for the leader's assignment.
    pub awaiting_sync: Option<oneshot::Sender<SyncResult>>,
    /// Joined in the current rebalance; such a member can time out while its JoinGroup is
    /// parked (Kafka's "new member join timeout").
    pub is_new: bool,
}

impl ClassicMember {
    pub fn is_awaiting_join(&self) -> bool {
        self.awaiting_join.is_some()
    }

    pub fn is_awaiting_sync(&self) -> bool {
        self.awaiting_sync.is_some()
    }

    pub fn is_static(&self) -> bool {
        self.group_instance_id.is_some()
    }

    /// Whether a heartbeat deadline passing may remove this member: members waiting in a
    /// rebalance are alive by definition, unless they are new.
    pub fn has_satisfied_heartbeat(&self) -> bool {
        !self.is_new && (self.is_awaiting_join() || self.is_awaiting_sync())
    }

    /// The metadata the member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| &p.metadata)
    }

    /// The member's most preferred protocol among `candidates`.
    pub fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|p| p.name.as_str())
            .find(|n| candidates.contains(n))
    }

    /// Completes the parked JoinGroup, if any; true if there was one.
    pub fn complete_join(&mut self, result: JoinResult) -> bool {
        match self.awaiting_join.take() {
            Some(tx) => {
                // The client may have gone; the member's state is what matters.
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    /// Completes the parked SyncGroup, if any; true if there was one.
    pub fn complete_sync(&mut self, result: SyncResult) -> bool {
        match self.awaiting_sync.take() {
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }
}
