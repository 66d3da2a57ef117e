"""``@task.openhands``: a TaskFlow function whose return value is what the agent should do::

    @task.openhands(repository="acme/app", wait_for_completion=True, pool="openhands")
    def upgrade(package: str) -> str:
        return f"Upgrade {package} to its latest version and open a PR."

The function may also return a dict of start options (``initial_user_msg`` and any of
``repository``, ``selected_branch``, ``git_provider``, ``title``, ``extra_body``). Mapped
(``upgrade.expand(...)``) without a ``map_index_template``, each task instance is named after its
repository (and branch) when its run ends, as the operator names it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    SET_DURING_EXECUTION,
    DecoratedOperator,
    TaskDecorator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

from airflow_provider_openhands.exceptions import OpenHandsConfigError
from airflow_provider_openhands.operators.openhands import OpenHandsStartConversationOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: What the decorated function may set by returning a dict.
RETURNABLE_OPTIONS = ("initial_user_msg", "repository", "selected_branch", "git_provider", "title", "extra_body")


class _OpenHandsDecoratedOperator(DecoratedOperator, OpenHandsStartConversationOperator):
    """Calls the function for the task text (or start options), then runs the start operator."""

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *OpenHandsStartConversationOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **OpenHandsStartConversationOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.openhands"
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["multiple_outputs"] = False  # the result is one state (or id), never split
        kwargs.setdefault("initial_user_msg", SET_DURING_EXECUTION)
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)

    def execute(self, context: Context) -> Any:
        """Call the function, take what it returns as data (never rendered as a template: a prompt
        may hold ``{{`` and an upstream value must not reach Airflow's Jinja), then start.

        The options travel with the task's lifecycle through deferrals and retries, so a resumed
        task never needs the function again.
        """
        context_merge(context, self.op_kwargs)
        result = self.python_callable(*self.op_args, **determine_kwargs(self.python_callable, self.op_args, context))
        if isinstance(result, str):
            self.initial_user_msg = result
        elif isinstance(result, Mapping):
            unknown = sorted(set(result) - set(RETURNABLE_OPTIONS))
            if unknown:
                raise OpenHandsConfigError(
                    f"@task.openhands function returned unknown start options {unknown}; "
                    f"allowed: {list(RETURNABLE_OPTIONS)}"
                )
            for key, value in result.items():
                setattr(self, key, value)
        else:
            raise OpenHandsConfigError(
                f"@task.openhands function must return the task text (str) or a dict of start options, "
                f"got {type(result).__name__}"
            )
        return OpenHandsStartConversationOperator.execute(self, context)


def openhands_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function into an :class:`OpenHandsStartConversationOperator` (``@task.openhands``)."""
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_OpenHandsDecoratedOperator, **kwargs
    )
