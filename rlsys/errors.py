"""The one base class of user errors: bad input that the user can fix.

``RecipeError`` (config), ``DataError`` (data files) and ``ModelError`` (model names and
directories) derive from ``UserError``; the ``rlsys`` CLI prints any ``UserError`` as one line
per problem and exits with status 2, without a traceback. Anything else is a bug and keeps its
traceback. This module defines classes only; it imports nothing.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input (a file, a field, a name); printed without a
    traceback. The message names the file and, where there is one, the line and field."""
