"""The CLI: commands, migrations, roles, certificates, the embedded services, supervision parts."""
