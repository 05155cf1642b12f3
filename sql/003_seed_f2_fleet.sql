-- The simulator's F2 fleet (simulator/fleet.py; a test keeps the two equal): four controllers
-- aa:bb:cc:dd:ee:01-04, each with a temperature/humidity sensor on J1, a door strike on J2, a power
-- meter on J3 and a CO2 sensor on J4.

CREATE TEMP TABLE seed_sensor_models (model text, name text, byte_offset smallint, byte_length smallint,
                                      is_signed boolean, decimals smallint, unit text) ON COMMIT DROP;
INSERT INTO seed_sensor_models VALUES
    ('th-sensor',   'temperature',  0, 2, true,  2, '°C'),
    ('th-sensor',   'humidity',     2, 2, false, 1, '%RH'),
    ('power-meter', 'voltage',      0, 2, false, 1, 'V'),
    ('power-meter', 'current',      2, 2, false, 3, 'A'),
    ('power-meter', 'active_power', 4, 4, true,  0, 'W'),
    ('co2-sensor',  'co2',          0, 2, false, 0, 'ppm'),
    ('co2-sensor',  'temperature',  2, 2, true,  1, '°C');

CREATE TEMP TABLE seed_sensors (port text, mode text, component text, model text, modbus_address integer)
    ON COMMIT DROP;
INSERT INTO seed_sensors VALUES
    ('J1', 'sensor-mode',         'sensor-1', 'th-sensor',   1),
    ('J2', 'access-control-mode', 'strike-1', 'strike',      0),
    ('J3', 'sensor-mode',         'sensor-1', 'power-meter', 3),
    ('J4', 'sensor-mode',         'sensor-2', 'co2-sensor',  4);

CREATE TEMP TABLE seed_controllers (mac text) ON COMMIT DROP;
INSERT INTO seed_controllers VALUES ('aabbccddee01'), ('aabbccddee02'), ('aabbccddee03'), ('aabbccddee04');

INSERT INTO devices (device_key, kind)
SELECT 'f2-' || mac, 'f2' FROM seed_controllers
ON CONFLICT (device_key) DO NOTHING;

INSERT INTO controllers (mac, device_id, name)
SELECT c.mac, d.device_id, 'F2 controller ' || c.mac
FROM seed_controllers c JOIN devices d ON d.device_key = 'f2-' || c.mac
ON CONFLICT (mac) DO NOTHING;

INSERT INTO connectors (controller_id, port, mode)
SELECT DISTINCT ct.controller_id, s.port, s.mode FROM controllers ct CROSS JOIN seed_sensors s
WHERE ct.mac IN (SELECT mac FROM seed_controllers)
ON CONFLICT (controller_id, port) DO NOTHING;

INSERT INTO sensors (connector_id, component, model, modbus_address)
SELECT cn.connector_id, s.component, s.model, s.modbus_address
FROM connectors cn JOIN seed_sensors s ON s.port = cn.port
JOIN controllers ct ON ct.controller_id = cn.controller_id
WHERE ct.mac IN (SELECT mac FROM seed_controllers)
ON CONFLICT (connector_id, component) DO NOTHING;

INSERT INTO metrics (name, unit)
SELECT DISTINCT s.port || '.' || s.component || '.' || m.name, m.unit
FROM seed_sensors s JOIN seed_sensor_models m ON m.model = s.model
ON CONFLICT (name, unit) DO NOTHING;

INSERT INTO datapoints (sensor_id, name, byte_offset, byte_length, is_signed, decimals, unit, metric_id)
SELECT se.sensor_id, m.name, m.byte_offset, m.byte_length, m.is_signed, m.decimals, m.unit, mt.metric_id
FROM sensors se
JOIN connectors cn ON cn.connector_id = se.connector_id
JOIN controllers ct ON ct.controller_id = cn.controller_id
JOIN seed_sensor_models m ON m.model = se.model
JOIN metrics mt ON mt.name = cn.port || '.' || se.component || '.' || m.name AND mt.unit = m.unit
WHERE ct.mac IN (SELECT mac FROM seed_controllers)
ON CONFLICT (sensor_id, name) DO NOTHING;
