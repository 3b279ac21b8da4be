-- The check's acknowledgement, downtime, suppression and flapping after
-- each change, so that the notification planner can tell from durable data
-- how long an alert spent acknowledged or held back (escalation delays do
-- not count that time). Rows written before this migration read false.
ALTER TABLE history
    ADD COLUMN acknowledged boolean NOT NULL DEFAULT false,
    ADD COLUMN in_downtime  boolean NOT NULL DEFAULT false,
    ADD COLUMN suppressed   boolean NOT NULL DEFAULT false,
    ADD COLUMN flapping     boolean NOT NULL DEFAULT false;
