-- Rows the database itself refused at storing (a last line of defence behind the decoder's checks) are
-- rejected with stage 'store' and the database's message.
ALTER TABLE rejected DROP CONSTRAINT rejected_stage_check;
ALTER TABLE rejected ADD CONSTRAINT rejected_stage_check
    CHECK (stage IN ('topic', 'decode', 'validate', 'duplicate', 'store'));
