use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenure_domain::{IdpIdentity, SourceRecord};
use tenure_sources::FetchRequest;
use uuid::Uuid;

/// What ingest publishes on `tenure.ingest.<source>`: a verified,
/// normalised record plus where and when it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestEnvelope {
    pub source: String,
    pub delivery_id: String,
    pub received_at: DateTime<Utc>,
    /// Ties every event and SCIM call caused by this delivery together.
    pub correlation_id: Uuid,
    pub record: SourceRecord,
}

impl IngestEnvelope {
    /// Message id for JetStream de-duplication of redelivered webhooks.
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.source, self.delivery_id)
    }
}

/// "Bring (app, person) to its desired state". Carries no operations: the
/// worker reads the current desired state when it runs, so stale or
/// duplicated jobs are harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub app: String,
    pub person_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// An operator approved this job past the mass-change guard.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
}

impl Job {
    pub fn partition(&self, partitions: u32) -> u32 {
        let b = self.person_id.as_bytes();
        let n = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        n % partitions.max(1)
    }
}

/// What the inbound SCIM endpoint publishes on `tenure.identity.<provider>`:
/// the IdP's current view of one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEnvelope {
    pub delivery_id: String,
    pub received_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub identity: IdpIdentity,
    /// Where the snapshot sits among those the provider's inbound SCIM
    /// endpoint wrote (its outbox sequence): for one user, larger is newer.
    /// The engine applies a snapshot only when it is newer than the one it
    /// holds. Absent in messages published before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
}

impl IdentityEnvelope {
    pub fn source(&self) -> String {
        format!("idp:{}", self.identity.provider)
    }
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.source(), self.delivery_id)
    }
}

/// A dataless webhook's request to fetch one person back from the HRIS API,
/// on `tenure.fetch.<source>`; the webhook is answered before the fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchEnvelope {
    pub source: String,
    pub delivery_id: String,
    pub received_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub request: FetchRequest,
}

impl FetchEnvelope {
    pub fn msg_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.source, self.delivery_id, self.request.source_person_id
        )
    }
}

/// An identity provider's notification named users or groups whose current
/// state is to be read back from the IdP's API, on
/// `tenure.idp_fetch.<provider>`; the notification is answered before the
/// fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpFetch {
    pub provider: String,
    pub delivery_id: String,
    pub received_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub target: IdpFetchTarget,
}

impl IdpFetch {
    pub fn msg_id(&self) -> String {
        format!("idp:{}:{}", self.provider, self.delivery_id)
    }
}

/// What to read back. Any one key is enough; `pk` is preferred when given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IdpFetchTarget {
    User {
        /// The IdP's primary key (Authentik: an integer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pk: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
    },
    Group {
        /// The IdP's primary key (Authentik: a UUID).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pk: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}
