"""Dispatch: the durable priority queue of tasks for cores (:mod:`.queue`), what a task may ask for
(:mod:`.request`), the order tasks run in (:mod:`.ordering`) and the actions they run (:mod:`.actions`)."""
