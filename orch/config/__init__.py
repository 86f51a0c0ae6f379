"""Configuration: the root model (:mod:`.schema`), one model per section (:mod:`.sections`), the sources it is
read from (:mod:`.sources`), its one loader (:mod:`.loader`) and its generated reference (:mod:`.reference`).

Nothing is imported here, so a light module (the logger setup, `orch --help`) can import
:mod:`orch.config.levels` without loading pydantic.
"""
