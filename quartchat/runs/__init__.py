"""A reply of a conversation as a run: a task that owns the upstream stream and outlives the
request that started it, and an event log that any number of readers replay and follow.

`control.Runs` starts and stops runs and answers readers; `log.RunLog` is where a run's events
go (`memory.MemoryLog` in one process; a Redis Stream when several processes serve).
"""
