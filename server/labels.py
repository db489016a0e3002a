"""Translated names of the protocol's enumerations, for templates: `labels.kind(value)`.

Python rather than template macros because a page of cards names dozens of kinds,
categories and ages: a dictionary lookup and one gettext call each, where a Jinja macro call
costs several times that. A value with no name here (an enumeration a newer node added) is
shown as it is.
"""

import gettext

from federation.items import N_

KINDS = {"offer": N_("Offer"), "need": N_("Need")}
STATUSES = {"open": N_("Open"), "promised": N_("Promised"), "fulfilled": N_("Fulfilled"),
            "withdrawn": N_("Withdrawn"), "expired": N_("Expired")}  # fmt: skip
URGENCIES = {"low": N_("Low urgency"), "normal": N_("Normal urgency"), "urgent": N_("Urgent")}
REACHES = {"local": N_("Only our group"), "allies": N_("Our allied groups"),
           "network": N_("Allies and their allies")}  # fmt: skip
CATEGORIES = {"food": N_("Food"), "housing": N_("Housing"), "transport": N_("Transport"),
              "health": N_("Health"), "care": N_("Care"), "clothing": N_("Clothing"),
              "household": N_("Household"), "money": N_("Money"), "skills": N_("Skills"),
              "tech": N_("Tech"), "other": N_("Other")}  # fmt: skip
ROLES = {"member": N_("Member"), "coordinator": N_("Coordinator"), "admin": N_("Admin")}
STATUS_ACTIONS = {"promised": N_("Mark promised"), "fulfilled": N_("Mark fulfilled"),
                  "withdrawn": N_("Withdraw"), "open": N_("Reopen")}  # fmt: skip


class Labels:
    """The names in one language."""

    def __init__(self, translations: gettext.NullTranslations) -> None:
        self._gettext = translations.gettext
        self._ngettext = translations.ngettext

    def _name(self, names: dict[str, str], value: str) -> str:
        message = names.get(value)
        return self._gettext(message) if message is not None else value

    def kind(self, value: str) -> str:
        return self._name(KINDS, value)

    def status(self, value: str) -> str:
        return self._name(STATUSES, value)

    def urgency(self, value: str) -> str:
        return self._name(URGENCIES, value)

    def reach(self, value: str) -> str:
        return self._name(REACHES, value)

    def category(self, value: str) -> str:
        return self._name(CATEGORIES, value)

    def role(self, value: str) -> str:
        return self._name(ROLES, value)

    def status_action(self, value: str) -> str:
        return self._name(STATUS_ACTIONS, value)

    def age(self, seconds: int) -> str:
        """How long ago, in whole minutes (at least one), hours or days."""
        ngettext = self._ngettext  # by that name, so that the messages are extracted
        if seconds < 3600:
            count = seconds // 60 or 1
            message = ngettext("%(num)d minute ago", "%(num)d minutes ago", count)
        elif seconds < 86400:
            count = seconds // 3600
            message = ngettext("%(num)d hour ago", "%(num)d hours ago", count)
        else:
            count = seconds // 86400
            message = ngettext("%(num)d day ago", "%(num)d days ago", count)
        return message % {"num": count}
