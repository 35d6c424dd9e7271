"""The tasks, one folder each (module, recipe, evaluation, bundle, prediction, settings), behind
the `Task` record of protocol.py. catalog.py lists them for the stages; settings.py gives each
its `tasks.<name>` section of params.yaml. Adding a task: a folder like these, a line in each."""
