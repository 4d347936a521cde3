-- workkit-workflow history projection (schema version 2): a step's plain transitions in its row,
-- and how many event types an execution waits for when waiting_for lists only the first 32
ALTER TABLE wf_steps ADD COLUMN started_seq INTEGER;
ALTER TABLE wf_steps ADD COLUMN finished_seq INTEGER;
ALTER TABLE wf_executions ADD COLUMN waiting_for_count INTEGER;
CREATE VIEW IF NOT EXISTS wf_transitions AS
  SELECT execution_id, seq, at, kind, phase, op, name, status, attempt, detail FROM wf_events
  UNION ALL
  SELECT execution_id, started_seq, started_at, 'step', phase, op, name, 'running', 1, '{}'
  FROM wf_steps WHERE started_seq IS NOT NULL
  UNION ALL
  SELECT execution_id, finished_seq, finished_at, 'step', phase, op, name, 'completed', attempt, '{}'
  FROM wf_steps WHERE finished_seq IS NOT NULL;
