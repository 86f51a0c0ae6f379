"""One module per configuration section, as in Prefect's ``prefect.settings.models``; the root model that
puts them together is :class:`orch.config.schema.Settings`."""
