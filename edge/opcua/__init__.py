"""The OPC UA collector: config (:mod:`.config`), collector and check (:mod:`.collector`),
companion-specification presets (:mod:`.presets`)."""
