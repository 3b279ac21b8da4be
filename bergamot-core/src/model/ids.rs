use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// The UUIDv5 namespace under which configured objects get their stable ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c2e_8a4d_4e0b_9f7a_2d5c_b8e1_0a43);

/// The kind of a configured object, part of its derived id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ObjectKind {
    /// A host check.
    Host,
    /// A service check on a host.
    Service,
    /// A passive trap on a host.
    Trap,
    /// A group.
    Group,
    /// A location.
    Location,
}

impl ObjectKind {
    fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Host => "host",
            ObjectKind::Service => "service",
            ObjectKind::Trap => "trap",
            ObjectKind::Group => "group",
            ObjectKind::Location => "location",
        }
    }
}

/// Derives the stable id of a configured object: UUIDv5 of site, kind and the
/// path of names (e.g. `["web1", "http"]` for service `http` on host `web1`).
///
/// Names are joined with a NUL byte, which no name can contain, so distinct
/// paths never collide.
pub(crate) fn derive(site: &str, kind: ObjectKind, path: &[&str]) -> Uuid {
    let mut key = Vec::with_capacity(64);
    key.extend_from_slice(site.as_bytes());
    key.push(0);
    key.extend_from_slice(kind.as_str().as_bytes());
    for p in path {
        key.push(0);
        key.extend_from_slice(p.as_bytes());
    }
    Uuid::new_v5(&NAMESPACE, &key)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random id (for objects not defined in config).
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// The id of a check (host, service or trap).
    CheckId
);
id_type!(
    /// The id of a group.
    GroupId
);
id_type!(
    /// The id of a location.
    LocationId
);
id_type!(
    /// The id of one check result, used to apply each result at most once.
    ResultId
);

impl ResultId {
    /// A new time-ordered id (UUID v7; monotonic within one process): the
    /// state machine orders results that share an `executed_at` by id, so
    /// such results are applied in the order they were made.
    pub fn now() -> Self {
        Self(Uuid::now_v7())
    }
}

impl CheckId {
    /// The stable id of the host check of host `host` in `site`.
    pub fn host(site: &str, host: &str) -> Self {
        Self(derive(site, ObjectKind::Host, &[host]))
    }

    /// The stable id of service `service` on host `host` in `site`.
    pub fn service(site: &str, host: &str, service: &str) -> Self {
        Self(derive(site, ObjectKind::Service, &[host, service]))
    }

    /// The stable id of trap `trap` on host `host` in `site`.
    pub fn trap(site: &str, host: &str, trap: &str) -> Self {
        Self(derive(site, ObjectKind::Trap, &[host, trap]))
    }
}

impl GroupId {
    /// The stable id of group `name` in `site`.
    pub fn named(site: &str, name: &str) -> Self {
        Self(derive(site, ObjectKind::Group, &[name]))
    }
}

impl LocationId {
    /// The stable id of location `name` in `site`.
    pub fn named(site: &str, name: &str) -> Self {
        Self(derive(site, ObjectKind::Location, &[name]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(CheckId::host("s", "web1"), CheckId::host("s", "web1"));
        assert_ne!(CheckId::host("s", "web1"), CheckId::host("t", "web1"));
        assert_ne!(
            CheckId::service("s", "a", "bc"),
            CheckId::service("s", "ab", "c")
        );
        assert_ne!(
            CheckId::service("s", "a", "b").0,
            CheckId::trap("s", "a", "b").0
        );
        assert_ne!(GroupId::named("s", "x").0, LocationId::named("s", "x").0);
        assert_eq!(CheckId::host("s", "web1").0.get_version_num(), 5);
    }
}
