-- F2 Smart Controller metadata: which sensor sits on which controller, connector
-- and component, and which datapoints its Modbus reply carries.

CREATE TABLE controllers (
    controller_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mac           text    NOT NULL UNIQUE CHECK (mac ~ '^[0-9a-f]{12}$'),
    device_id     integer NOT NULL UNIQUE REFERENCES devices (device_id),
    name          text    NOT NULL DEFAULT ''
);

CREATE TABLE connectors (
    connector_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    controller_id integer NOT NULL REFERENCES controllers (controller_id),
    port          text    NOT NULL CHECK (port IN ('J1', 'J2', 'J3', 'J4')),
    mode          text    NOT NULL,
    UNIQUE (controller_id, port)
);

CREATE TABLE sensors (
    sensor_id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector_id   integer NOT NULL REFERENCES connectors (connector_id),
    component      text    NOT NULL,
    model          text    NOT NULL,
    modbus_address integer NOT NULL,
    UNIQUE (connector_id, component)
);

CREATE TABLE datapoints (
    datapoint_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id     integer  NOT NULL REFERENCES sensors (sensor_id),
    name          text     NOT NULL,
    byte_offset   smallint NOT NULL CHECK (byte_offset >= 0),
    byte_length   smallint NOT NULL CHECK (byte_length BETWEEN 1 AND 8),
    is_signed     boolean  NOT NULL,
    decimals      smallint NOT NULL CHECK (decimals BETWEEN 0 AND 9),
    unit          text     NOT NULL DEFAULT '',
    metric_id     integer  NOT NULL REFERENCES metrics (metric_id),
    UNIQUE (sensor_id, name)
);
