//! From what a look-up found to what a reconcile does: use the account,
//! link it, adopt it, refuse it, or create one, and the SCIM operations
//! that follow. Pure, and the only place this is decided: `tenure plan
//! --live` and the real reconcile both call [`decide`], so a plan never
//! shows a take-over the reconcile would refuse.

use serde_json::json;
use tenure_config::AdoptPolicy;
use tenure_scim::{diff_with, Capabilities, Desired, Op, Profile, RemoteUser};
use uuid::Uuid;

/// Found by the account id Tenure stored for the person.
pub const FOUND_BY_ID: &str = "id";
/// Tenure's last known state of the account (an offline plan).
pub const FOUND_BY_STORED: &str = "stored";
pub const FOUND_BY_EXTERNAL_ID: &str = "externalId";
pub const FOUND_BY_USER_NAME: &str = "userName";

/// How an account found by a look-up becomes the person's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Already the person's (found by the stored id), or nothing found.
    Known,
    /// It carries the person's `externalId`: Tenure made it (e.g. before a
    /// crash lost the response) and only the link was missing.
    Linked,
    /// Someone else made it; the app's `adopt` policy lets Tenure take it.
    Adopted,
}

/// What to do for one person in one app.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Proceed {
        link: Link,
        ops: Vec<Op>,
    },
    /// Leave the account alone and tell an operator why.
    Refuse(String),
}

/// Decides for the account `found` (with how it was found: one of the
/// `FOUND_BY_*` names) and the desired state.
///
/// An account found by `userName` is the person's when its `externalId` is
/// the person id; otherwise `adopt` decides: `never` refuses every one,
/// `unmanaged_only` takes one without an `externalId` (every one, in an app
/// that does not store `externalId`: there is nothing to tell them apart),
/// `always` takes any.
pub fn decide(
    desired: &Desired,
    found: Option<(&RemoteUser, &str)>,
    person_id: Uuid,
    adopt: AdoptPolicy,
    caps: Capabilities,
    profile: &Profile,
) -> Decision {
    let link = match found {
        None => Link::Known,
        Some((_, how)) if how == FOUND_BY_ID || how == FOUND_BY_STORED => Link::Known,
        Some((remote, how)) => {
            let theirs = remote
                .external_id
                .as_deref()
                .filter(|x| !x.is_empty() && profile.external_id);
            let ours = theirs == Some(person_id.to_string().as_str());
            if ours {
                Link::Linked
            } else if how == FOUND_BY_EXTERNAL_ID {
                // The look-up re-checks the filter's match, so this is a
                // server returning someone else for our externalId.
                return Decision::Refuse(format!(
                    "the look-up by externalId {person_id} returned account {} with externalId {theirs:?}; not linking it",
                    remote.id
                ));
            } else {
                match (adopt, theirs) {
                    (AdoptPolicy::Never, _) => {
                        return Decision::Refuse(format!(
                            "userName {:?} is taken by remote account {} (externalId {theirs:?}) that Tenure did not create; adopt = \"never\" leaves it alone",
                            remote.user_name, remote.id
                        ))
                    }
                    (AdoptPolicy::UnmanagedOnly, Some(other)) => {
                        return Decision::Refuse(format!(
                            "userName {:?} is taken by remote account {} with externalId {other:?}; not linking someone else's account (adopt = \"always\" would take it)",
                            remote.user_name, remote.id
                        ))
                    }
                    _ => Link::Adopted,
                }
            }
        }
    };
    Decision::Proceed {
        link,
        ops: diff_with(desired, found.map(|(r, _)| r), caps, profile),
    }
}

/// The audit event of a link or an adoption: `AccountLinked`, or
/// `AccountAdopted` with the account as it was found (the before-image).
pub fn link_event(
    link: Link,
    remote: &RemoteUser,
    how: &str,
    adopt: AdoptPolicy,
) -> Option<(&'static str, serde_json::Value)> {
    match link {
        Link::Known => None,
        Link::Linked => Some((
            "AccountLinked",
            json!({
                "remote_id": remote.id,
                "user_name": remote.user_name,
                "active": remote.active,
                "found_by": how,
            }),
        )),
        Link::Adopted => Some((
            "AccountAdopted",
            json!({
                "remote_id": remote.id,
                "user_name": remote.user_name,
                "active": remote.active,
                "found_by": how,
                "policy": adopt.as_str(),
                "previous_external_id": remote.external_id,
                "before": before_image(remote),
            }),
        )),
    }
}

/// The resource as the server returned it, else Tenure's reading of it.
fn before_image(remote: &RemoteUser) -> serde_json::Value {
    if remote.raw.is_null() {
        let mut r = remote.clone();
        r.raw = serde_json::Value::Null;
        serde_json::to_value(r).unwrap_or_default()
    } else {
        remote.raw.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_scim::UserSpec;

    fn person() -> Uuid {
        Uuid::from_u128(7)
    }

    fn spec() -> UserSpec {
        UserSpec {
            user_name: "ana".into(),
            external_id: person().to_string(),
            given_name: "Ana".into(),
            email: "ana@example.com".into(),
            active: true,
            ..UserSpec::default()
        }
    }

    fn remote(external_id: Option<&str>) -> RemoteUser {
        RemoteUser {
            id: "r1".into(),
            user_name: "ana".into(),
            external_id: external_id.map(str::to_owned),
            active: true,
            ..RemoteUser::default()
        }
    }

    fn run(found: &RemoteUser, how: &str, adopt: AdoptPolicy, profile: &Profile) -> Decision {
        decide(
            &Desired::Present(spec()),
            Some((found, how)),
            person(),
            adopt,
            Capabilities::default(),
            profile,
        )
    }

    #[test]
    fn adoption_follows_the_policy() {
        let generic = Profile::generic();
        let ours = person().to_string();
        let cases = [
            // (externalId on the account, policy, expected link or refusal)
            (None, AdoptPolicy::Never, None),
            (None, AdoptPolicy::UnmanagedOnly, Some(Link::Adopted)),
            (None, AdoptPolicy::Always, Some(Link::Adopted)),
            (Some(""), AdoptPolicy::UnmanagedOnly, Some(Link::Adopted)),
            (Some("someone"), AdoptPolicy::Never, None),
            (Some("someone"), AdoptPolicy::UnmanagedOnly, None),
            (Some("someone"), AdoptPolicy::Always, Some(Link::Adopted)),
            (Some(ours.as_str()), AdoptPolicy::Never, Some(Link::Linked)),
            (
                Some(ours.as_str()),
                AdoptPolicy::UnmanagedOnly,
                Some(Link::Linked),
            ),
        ];
        for (ext, adopt, want) in cases {
            let d = run(&remote(ext), FOUND_BY_USER_NAME, adopt, &generic);
            match (want, &d) {
                (Some(l), Decision::Proceed { link, ops }) => {
                    assert_eq!(*link, l, "{ext:?} {adopt:?}");
                    assert!(!ops.is_empty(), "the account is brought in line");
                }
                (None, Decision::Refuse(why)) => assert!(why.contains("r1"), "{why}"),
                _ => panic!("{ext:?} {adopt:?}: {d:?}"),
            }
        }
    }

    #[test]
    fn accounts_found_by_id_are_never_questioned() {
        let d = run(
            &remote(Some("someone")),
            FOUND_BY_ID,
            AdoptPolicy::Never,
            &Profile::generic(),
        );
        assert!(
            matches!(
                d,
                Decision::Proceed {
                    link: Link::Known,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn apps_without_external_id_adopt_unmanaged_only_by_user_name() {
        let nextcloud = tenure_scim::builtin("nextcloud").expect("nextcloud");
        let d = run(
            &remote(Some("whatever")),
            FOUND_BY_USER_NAME,
            AdoptPolicy::UnmanagedOnly,
            &nextcloud,
        );
        assert!(
            matches!(
                d,
                Decision::Proceed {
                    link: Link::Adopted,
                    ..
                }
            ),
            "{d:?}"
        );
        let d = run(
            &remote(None),
            FOUND_BY_USER_NAME,
            AdoptPolicy::Never,
            &nextcloud,
        );
        assert!(matches!(d, Decision::Refuse(_)), "{d:?}");
    }

    #[test]
    fn adoption_records_the_account_as_found() {
        let mut r = remote(None);
        r.raw = json!({"id": "r1", "userName": "ana", "title": "Old"});
        let (kind, data) = link_event(
            Link::Adopted,
            &r,
            FOUND_BY_USER_NAME,
            AdoptPolicy::UnmanagedOnly,
        )
        .expect("an event");
        assert_eq!(kind, "AccountAdopted");
        assert_eq!(data["before"]["title"], "Old");
        assert_eq!(data["policy"], "unmanaged_only");
        assert!(link_event(Link::Known, &r, FOUND_BY_ID, AdoptPolicy::Never).is_none());
    }
}
