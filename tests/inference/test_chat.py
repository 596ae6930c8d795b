"""Which `chat_template_kwargs` reach the template: variables yes; the template call's own
parameters never; a template of the request's own only when the operator trusts requests."""

from __future__ import annotations

import inspect

import pytest
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from inference.chat import CALL_PARAMETERS, check_template_kwargs, render_chat
from inference.errors import InvalidRequestError

USER = [{"role": "user", "content": "Hi"}]


def _named_parameters(function) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name for name, p in inspect.signature(function).parameters.items()
            if p.kind in kinds and name != "self"}


def test_every_parameter_of_the_template_call_is_refused_as_a_kwarg():
    # A new transformers release that adds a parameter fails here, not in production.
    named = (_named_parameters(PreTrainedTokenizerBase.apply_chat_template)
             | _named_parameters(render_jinja_template)) - {"chat_template"}
    assert named <= CALL_PARAMETERS, sorted(named - CALL_PARAMETERS)


@pytest.mark.parametrize("kwargs", [{"chat_template": "{{ 1 }}"}, {"tokenize": True},
                                    {"enable_thinking": True, "return_dict": True}])
def test_refused_kwargs_name_the_parameter(kwargs):
    with pytest.raises(InvalidRequestError) as error:
        check_template_kwargs(kwargs)
    assert error.value.param == "chat_template_kwargs"


def test_trust_admits_the_template_and_nothing_else():
    check_template_kwargs({"chat_template": "{{ 1 }}"}, trust_template=True)
    with pytest.raises(InvalidRequestError):
        check_template_kwargs({"chat_template": "{{ 1 }}", "tokenize": True}, trust_template=True)


def test_template_variables_pass(builtin_tokenizer):
    check_template_kwargs(None)
    check_template_kwargs({"enable_thinking": False, "custom_flag": "on"})
    assert render_chat(builtin_tokenizer, USER, chat_template_kwargs={"enable_thinking": False})


def test_render_chat_refuses_a_request_template_unless_trusted(builtin_tokenizer):
    kwargs = {"chat_template": "[{{ messages[0]['content'] }}]"}
    with pytest.raises(InvalidRequestError):
        render_chat(builtin_tokenizer, USER, chat_template_kwargs=kwargs)
    assert render_chat(builtin_tokenizer, USER, chat_template_kwargs=kwargs,
                       trust_template=True) == "[Hi]"
