"""Organisation and access: region tree, staff, roles and scope, API keys, audit log."""
