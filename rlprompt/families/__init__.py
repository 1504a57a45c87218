"""Task families (``task:`` in a config): classification and generation, registered in
:data:`rlprompt.registry.TASKS`.

A family is what kind of answer a task asks for and how it is scored: class verbalizers read by
the model (``classification``) or generated text compared with references (``generation``).
Its :class:`~rlprompt.families.base.TaskFamily` entry holds everything the layers around the task
need to know of it - the config checks and defaults, the task class that loads and scores it,
the answer a demonstration shows, its metrics, its rows in bench tables and its fields in an
export - so no code outside a family's own module branches on the family's name.

Adding a family: a module here with a :class:`~rlprompt.families.base.TaskFamily` subclass and
the :class:`~rlprompt.task.Task` subclass it builds, one ``TASKS.register`` line below, and a
tiny fixture in ``tests/test_task_family_contract.py``, whose checks then run on it. This
package imports no torch: the config layer looks families up to check a config.
"""

from __future__ import annotations

from rlprompt.registry import TASKS

TASKS.register("classification", "rlprompt.families.classification:FAMILY")
TASKS.register("generation", "rlprompt.families.generation:FAMILY")
