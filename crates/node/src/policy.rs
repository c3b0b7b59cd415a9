//! What a node agrees to run: images by name and digest, tasks by requesting organization.
//! Pure functions over the settings and what Docker says about the local image, so every rule is
//! unit-tested.

use crate::config::{ImageRule, Policy};
use crate::ids::OrgId;

/// A local image as Docker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// The image id (`sha256:…` of its configuration): content-addressed, what containers are
    /// created from so that a re-tag between check and start changes nothing.
    pub id: String,
    /// Its repository tags (`name:tag`).
    pub tags: Vec<String>,
    /// Its repository digests (`name@sha256:…`), for images that came from a registry.
    pub digests: Vec<String>,
}

/// A requested image reference split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Repository name (`fedq/secure-sum`).
    pub name: &'a str,
    /// Digest, if the reference pins one (`sha256:…`).
    pub digest: Option<&'a str>,
}

/// Splits `name[:tag][@digest]`. A `:` after the last `/` starts the tag (a registry host may
/// have a port: `host:5000/name:tag`).
pub fn parse_reference(reference: &str) -> ImageRef<'_> {
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    let name_end = match rest.rfind(':') {
        Some(colon) if !rest[colon..].contains('/') => colon,
        _ => rest.len(),
    };
    ImageRef { name: &rest[..name_end], digest }
}

/// `*` matches any run of characters, everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Why an image may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefusal {
    /// No rule names it.
    #[error("image {0:?} is not allowed by this node's policy")]
    NotAllowed(String),
    /// A rule names it but its digest is not the pinned one.
    #[error("image {name:?} has digest {id}, which this node's policy does not allow")]
    WrongDigest {
        /// The name.
        name: String,
        /// The local image id.
        id: String,
    },
    /// The reference pins a digest the local image does not have.
    #[error("image {0:?} is present but not with the digest the task asked for")]
    DigestMismatch(String),
    /// A rule names and pins it, for other requesters only.
    #[error("image {name:?} may not run for organization {requester} at this node")]
    NotForRequester {
        /// The name.
        name: String,
        /// Who asked.
        requester: OrgId,
    },
    /// Nodes never pull: the image must be loaded at the node beforehand.
    #[error("image {0:?} is not available at this node (nodes never pull images)")]
    Missing(String),
}

/// Whether `reference`, present locally as `image`, may run for `requester` under `rules`;
/// if so, the data sources its container gets: those granted by every rule it passes.
pub fn check_image(
    policy: &Policy,
    reference: &str,
    image: &LocalImage,
    requester: OrgId,
) -> Result<Vec<String>, ImageRefusal> {
    let rules = &policy.images;
    let wanted = parse_reference(reference);
    if let Some(digest) = wanted.digest {
        let matches = image.id == digest || image.digests.iter().any(|d| d.ends_with(&format!("@{digest}")));
        if !matches {
            return Err(ImageRefusal::DigestMismatch(reference.to_owned()));
        }
    }
    let named: Vec<&ImageRule> = rules.iter().filter(|r| glob(&r.name, wanted.name)).collect();
    if named.is_empty() {
        return Err(ImageRefusal::NotAllowed(reference.to_owned()));
    }
    let pinned: Vec<&ImageRule> = named
        .into_iter()
        .filter(|r| {
            r.digest == "*"
                || glob(&r.digest, &image.id)
                || image.digests.iter().any(|d| d.split_once('@').is_some_and(|(_, d)| glob(&r.digest, d)))
        })
        .collect();
    if pinned.is_empty() {
        return Err(ImageRefusal::WrongDigest { name: wanted.name.to_owned(), id: image.id.clone() });
    }
    let granted: Vec<&ImageRule> =
        pinned.into_iter().filter(|r| r.requesters.is_empty() || names(&r.requesters, requester)).collect();
    if granted.is_empty() {
        return Err(ImageRefusal::NotForRequester { name: wanted.name.to_owned(), requester });
    }
    let mut data: Vec<String> = granted.iter().flat_map(|r| r.data.iter().cloned()).collect();
    data.sort();
    data.dedup();
    Ok(data)
}

/// The organizations a job must be allowed for at the node that receives it: the envelope's
/// `sender`, then every organization its job start says it answers to, each once. The one
/// definition both of the receiving node's check and of what a subtask carries.
pub fn principals(sender: OrgId, on_behalf_of: &[OrgId]) -> Vec<OrgId> {
    let mut all = vec![sender];
    for org in on_behalf_of {
        if !all.contains(org) {
            all.push(*org);
        }
    }
    all
}

/// [`check_image`] for every one of `principals` (the envelope's sender, and the run's root
/// requester when another): the image must be allowed for each, and its container gets only the
/// data sources granted to all of them. A subtask that a partner's job makes its host node create
/// at the host's own organization is thereby held to what the partner may do there.
pub fn check_image_for_all(
    policy: &Policy,
    reference: &str,
    image: &LocalImage,
    principals: &[OrgId],
) -> Result<Vec<String>, ImageRefusal> {
    let mut granted: Option<Vec<String>> = None;
    for &principal in principals {
        let data = check_image(policy, reference, image, principal)?;
        granted = Some(match granted {
            None => data,
            Some(before) => before.into_iter().filter(|d| data.contains(d)).collect(),
        });
    }
    Ok(granted.unwrap_or_default())
}

/// Whether `list` (organization ids, or `*`) names `org`.
fn names(list: &[String], org: OrgId) -> bool {
    list.iter().any(|r| r == "*" || r.parse::<OrgId>().is_ok_and(|o| o == org))
}

/// What in a policy lets more run than its administrator may think, for a warning at start.
pub fn loose_rules(policy: &Policy) -> Vec<String> {
    let mut loose = Vec::new();
    if policy.requesters.iter().any(|r| r == "*") {
        loose.push(
            "[policy] requesters = [\"*\"]: every member of a shared collaboration may run tasks here".into(),
        );
    }
    for rule in &policy.images {
        if rule.digest == "*" {
            loose.push(format!(
                "[[policy.images]] {:?} has digest = \"*\": any image of that name runs, whoever built it; pin its id",
                rule.name
            ));
        }
    }
    loose
}

/// Whether organization `requester` may have jobs run here.
pub fn requester_allowed(policy: &Policy, requester: OrgId) -> bool {
    names(&policy.requesters, requester)
}

/// Why a task with `organizations` may not run here for `requester`, if it lists fewer distinct
/// organizations than `policy.min_organizations`. This organization's own tasks and its own
/// algorithms' subtasks (`requester == own`) are exempt: their aggregate reaches only itself, and
/// a subtask's run was checked when its first job came.
pub fn too_few_organizations(
    policy: &Policy,
    requester: OrgId,
    own: OrgId,
    organizations: &[OrgId],
) -> Option<String> {
    let distinct: std::collections::BTreeSet<&OrgId> = organizations.iter().collect();
    (requester != own && distinct.len() < policy.min_organizations).then(|| {
        format!(
            "the task lists {} distinct organization(s); this node takes part in another organization's \
             tasks only with at least {} (policy.min_organizations), so that what it contributes to is \
             never one other party's view of its data",
            distinct.len(),
            policy.min_organizations
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, digest: &str) -> ImageRule {
        ImageRule { name: name.into(), digest: digest.into(), ..ImageRule::default() }
    }

    fn policy(images: Vec<ImageRule>) -> Policy {
        Policy { images, requesters: vec!["*".into()], ..Policy::default() }
    }

    fn check(rules: &[ImageRule], reference: &str, image: &LocalImage) -> Result<Vec<String>, ImageRefusal> {
        check_image(&policy(rules.to_vec()), reference, image, OrgId::new())
    }

    fn image() -> LocalImage {
        LocalImage { id: "sha256:abcd".into(), tags: vec!["fedq/probe:0.1.0".into()], digests: vec![] }
    }

    #[test]
    fn references_split() {
        assert_eq!(parse_reference("fedq/probe:0.1.0").name, "fedq/probe");
        assert_eq!(parse_reference("host:5000/fedq/probe").name, "host:5000/fedq/probe");
        let pinned = parse_reference("host:5000/fedq/probe:1@sha256:ff");
        assert_eq!((pinned.name, pinned.digest), ("host:5000/fedq/probe", Some("sha256:ff")));
    }

    #[test]
    fn globs() {
        assert!(glob("fedq/*", "fedq/probe"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(!glob("fedq/probe", "fedq/probe2"));
        assert!(glob("sha256:ab*", "sha256:abcd"));
    }

    #[test]
    fn images_are_checked_by_name_then_digest() {
        let img = image();
        assert_eq!(check(&[rule("fedq/*", "*")], "fedq/probe:0.1.0", &img), Ok(vec![]));
        assert_eq!(check(&[rule("fedq/probe", "sha256:abcd")], "fedq/probe:0.1.0", &img), Ok(vec![]));
        assert!(matches!(
            check(&[rule("other/*", "*")], "fedq/probe:0.1.0", &img),
            Err(ImageRefusal::NotAllowed(_))
        ));
        assert!(matches!(
            check(&[rule("fedq/probe", "sha256:ffff")], "fedq/probe:0.1.0", &img),
            Err(ImageRefusal::WrongDigest { .. })
        ));
        assert!(matches!(
            check(&[rule("fedq/*", "*")], "fedq/probe@sha256:0000", &img),
            Err(ImageRefusal::DigestMismatch(_))
        ));
        assert_eq!(check(&[rule("fedq/*", "*")], "fedq/probe@sha256:abcd", &img), Ok(vec![]));
        assert!(check(&[], "fedq/probe:0.1.0", &img).is_err(), "no rule, nothing runs");
    }

    #[test]
    fn a_container_gets_only_the_data_its_rules_grant_to_its_requester() {
        let img = image();
        let (ada, mallory) = (OrgId::new(), OrgId::new());
        let rules = vec![
            ImageRule {
                data: vec!["patients".into()],
                requesters: vec![ada.to_string()],
                ..rule("fedq/probe", "sha256:abcd")
            },
            ImageRule { data: vec!["public".into()], ..rule("fedq/*", "sha256:abcd") },
            ImageRule { data: vec!["unpinned".into()], ..rule("fedq/probe", "sha256:ffff") },
        ];
        let p = policy(rules);
        assert_eq!(
            check_image(&p, "fedq/probe:0.1.0", &img, ada),
            Ok(vec!["patients".into(), "public".into()])
        );
        assert_eq!(check_image(&p, "fedq/probe:0.1.0", &img, mallory), Ok(vec!["public".into()]));
        let only_ada =
            policy(vec![ImageRule { requesters: vec![ada.to_string()], ..rule("fedq/probe", "*") }]);
        assert!(matches!(
            check_image(&only_ada, "fedq/probe:0.1.0", &img, mallory),
            Err(ImageRefusal::NotForRequester { .. })
        ));
    }

    #[test]
    fn loose_rules_are_named() {
        let mut p = policy(vec![rule("fedq/probe", "*"), rule("fedq/secure-sum", "sha256:abcd")]);
        let loose = loose_rules(&p);
        assert_eq!(loose.len(), 2, "{loose:?}");
        assert!(loose[1].contains("\"fedq/probe\" has digest"), "{loose:?}");
        p.requesters = vec![OrgId::new().to_string()];
        p.images.remove(0);
        assert!(loose_rules(&p).is_empty());
    }

    #[test]
    fn requesters() {
        let me = OrgId::new();
        let mut policy = Policy { requesters: vec![me.to_string()], ..Policy::default() };
        assert!(requester_allowed(&policy, me));
        assert!(!requester_allowed(&policy, OrgId::new()));
        policy.requesters = vec!["*".into()];
        assert!(requester_allowed(&policy, OrgId::new()));
        policy.requesters = vec![];
        assert!(!requester_allowed(&policy, me));
    }

    #[test]
    fn a_job_on_behalf_of_another_organization_gets_only_what_both_may_have() {
        let (me, partner) = (OrgId::new(), OrgId::new());
        let everyone =
            ImageRule { name: "fedq/probe".into(), requesters: vec!["*".into()], ..rule("fedq/probe", "*") };
        let only_me = ImageRule {
            name: "fedq/probe".into(),
            requesters: vec![me.to_string()],
            data: vec!["registry".into()],
            ..rule("fedq/probe", "*")
        };
        let mine = ImageRule { requesters: vec![me.to_string()], ..rule("fedq/own-only", "*") };
        let policy = policy(vec![everyone, only_me, mine]);
        let image = LocalImage { id: "sha256:1".into(), tags: vec![], digests: vec![] };
        assert_eq!(check_image_for_all(&policy, "fedq/probe", &image, &[me]).unwrap(), vec!["registry"]);
        assert!(check_image_for_all(&policy, "fedq/probe", &image, &[me, partner]).unwrap().is_empty());
        assert!(matches!(
            check_image_for_all(&policy, "fedq/own-only", &image, &[me, partner]),
            Err(ImageRefusal::NotForRequester { requester, .. }) if requester == partner
        ));
    }

    #[test]
    fn a_task_of_another_organization_needs_enough_distinct_organizations() {
        let policy = Policy::default();
        assert_eq!(policy.min_organizations, 3);
        let (me, a, b) = (OrgId::new(), OrgId::new(), OrgId::new());
        assert!(too_few_organizations(&policy, a, me, &[a, me]).is_some(), "a ring of two");
        assert!(too_few_organizations(&policy, a, me, &[a, me, a]).is_some(), "listed twice is one");
        assert!(too_few_organizations(&policy, a, me, &[a, me, b]).is_none());
        assert!(too_few_organizations(&policy, me, me, &[me]).is_none(), "our own subtask");
        let one = Policy { min_organizations: 1, ..Policy::default() };
        assert!(too_few_organizations(&one, a, me, &[me]).is_none());
    }
}
