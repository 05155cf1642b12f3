-- Whether the broker sent a message again (MQTT's DUP flag, which the listener records as the stream field
-- `dup`): after a broker restart or a listener reconnect, a message whose first copy the listener had
-- written but not yet acknowledged comes again. A plain reading without a device timestamp takes its
-- arrival time as its time, so its second copy would be a second row; decoding finds the earlier identical
-- message of such a copy and rejects the copy as a duplicate (dagster_project/lib/storage/redeliveries.py).
ALTER TABLE raw_messages ADD COLUMN IF NOT EXISTS redelivered boolean NOT NULL DEFAULT false;
