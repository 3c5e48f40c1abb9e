"""A job's config: its schema (`schema`), its variants and a sweep's jobs (`variants`), its
identity (`identity`) and the check before any compute (`check`). Import the module you need:
this package imports nothing, so a tool that only reads runs pulls in no torch."""
