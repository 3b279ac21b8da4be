-- Notification jobs: planned notifications and their delivery record.
-- Claimed with FOR UPDATE SKIP LOCKED (see src/notify.rs): several notifier
-- nodes share the work, each job goes to one node at a time under a lease.
CREATE TABLE notification_jobs (
    id            uuid PRIMARY KEY,
    alert_id      uuid,
    check_id      uuid NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
    not_before    timestamptz NOT NULL,
    lease_until   timestamptz,
    node          text,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    seq           bigserial,
    notification  jsonb NOT NULL
);
-- Due work: pending by not_before, sending by lease end.
CREATE INDEX notification_jobs_pending ON notification_jobs (not_before) WHERE status = 'pending';
CREATE INDEX notification_jobs_sending ON notification_jobs (lease_until) WHERE status = 'sending';
CREATE INDEX notification_jobs_alert ON notification_jobs (alert_id, created_at DESC);
CREATE INDEX notification_jobs_check ON notification_jobs (check_id, created_at DESC);
CREATE INDEX notification_jobs_status ON notification_jobs (status, created_at DESC);
CREATE INDEX notification_jobs_created ON notification_jobs (created_at DESC);
