"""Everything the assets and checks write to and read from the database, by job, as plain functions over
a connection."""
