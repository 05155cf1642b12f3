"""The whole product as processes: `iot-etl up`, faults, graceful stops, the UI, logs."""
