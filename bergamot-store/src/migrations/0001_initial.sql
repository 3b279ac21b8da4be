-- Bergamot schema version 1. Runs with search_path set to the store's schema.

CREATE TABLE site (
    id    smallint PRIMARY KEY CHECK (id = 1),
    name  text NOT NULL
);

CREATE TABLE groups (
    id        uuid PRIMARY KEY,
    position  integer NOT NULL,
    name      text NOT NULL
);

-- Edges of the group graph, child -> parent; walked downwards by the
-- recursive aggregate query (primary key) and upwards by ancestor_groups.
CREATE TABLE group_parents (
    parent_id  uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    group_id   uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    ord        integer NOT NULL,       -- position in the group's parent list
    PRIMARY KEY (parent_id, group_id)
);
CREATE INDEX group_parents_child ON group_parents (group_id);

CREATE TABLE locations (
    id         uuid PRIMARY KEY,
    position   integer NOT NULL,
    name       text NOT NULL,
    parent_id  uuid
);
CREATE INDEX locations_parent ON locations (parent_id);

CREATE TABLE checks (
    id           uuid PRIMARY KEY,
    position     integer NOT NULL,
    is_host      boolean NOT NULL,
    location_id  uuid,                 -- own location, else its host's
    policy       jsonb NOT NULL,       -- bergamot_core::model::Policy
    def          jsonb NOT NULL        -- the whole bergamot_core::model::Check
);
CREATE INDEX checks_location ON checks (location_id) WHERE is_host;

CREATE TABLE check_groups (
    group_id  uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    check_id  uuid NOT NULL REFERENCES checks (id) ON DELETE CASCADE,
    sole      boolean NOT NULL,        -- the check is in this group only
    PRIMARY KEY (group_id, check_id)
);
CREATE INDEX check_groups_check ON check_groups (check_id);

CREATE TABLE check_deps (
    check_id  uuid NOT NULL REFERENCES checks (id) ON DELETE CASCADE,
    dep_id    uuid NOT NULL,
    PRIMARY KEY (check_id, dep_id)
);

-- One row per check: the hot fields as columns, the rest as JSONB.
CREATE TABLE check_state (
    check_id        uuid PRIMARY KEY REFERENCES checks (id) ON DELETE CASCADE,
    version         bigint NOT NULL,
    status          smallint NOT NULL,   -- severity 0..9
    ok              boolean NOT NULL,
    hard            boolean NOT NULL,
    attempt         integer NOT NULL,
    last_check_at   timestamptz,
    last_result_id  uuid,
    flapping        boolean NOT NULL,
    in_downtime     boolean NOT NULL,
    suppressed      boolean NOT NULL,
    acknowledged    smallint NOT NULL,   -- 0 none, 1 normal, 2 sticky
    encompassed     boolean NOT NULL,
    output          text NOT NULL,
    rest            jsonb NOT NULL       -- long output, perfdata, flap history, alert, change times
) WITH (fillfactor = 80);

CREATE TABLE history (
    check_id   uuid NOT NULL REFERENCES checks (id) ON DELETE CASCADE,
    version    bigint NOT NULL,
    at         timestamptz NOT NULL,
    result_id  uuid,
    status     smallint NOT NULL,
    ok         boolean NOT NULL,
    hard       boolean NOT NULL,
    attempt    integer NOT NULL,
    output     text NOT NULL,
    events     jsonb NOT NULL,
    PRIMARY KEY (check_id, version)
);

CREATE TABLE alerts (
    id         uuid PRIMARY KEY,
    check_id   uuid NOT NULL REFERENCES checks (id) ON DELETE CASCADE,
    opened_at  timestamptz NOT NULL,
    closed_at  timestamptz,
    status     smallint NOT NULL,
    worst      smallint NOT NULL
);
CREATE INDEX alerts_check ON alerts (check_id, opened_at DESC);
CREATE INDEX alerts_opened ON alerts (opened_at DESC);

CREATE TABLE downtimes (
    id         uuid PRIMARY KEY,
    check_id   uuid NOT NULL REFERENCES checks (id) ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    author     text NOT NULL,
    comment    text NOT NULL
);
CREATE INDEX downtimes_check ON downtimes (check_id);
CREATE INDEX downtimes_window ON downtimes (starts_at, ends_at);
