"""The tool-call parser on well-formed, malformed, partial and nested calls."""

from __future__ import annotations

from rlsys.envs.parse import parse_tool_calls


def _call(name: str, args: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


def test_hermes_calls_in_order_with_their_arguments():
    text = "First " + _call("calculator", '{"expression": "2*3"}') + " then " + \
        _call("python", '{"code": "x = 1"}')
    calls = parse_tool_calls(text)
    assert [(c.name, c.arguments, c.error) for c in calls] == [
        ("calculator", {"expression": "2*3"}, None), ("python", {"code": "x = 1"}, None)]
    assert text[calls[0].start:calls[0].end] == _call("calculator", '{"expression": "2*3"}')


def test_arguments_given_as_a_json_string_are_decoded():
    text = '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1+2\\"}"}' \
           '</tool_call>'
    [call] = parse_tool_calls(text)
    assert call.error is None and call.arguments == {"expression": "1+2"}


def test_closing_and_opening_tags_inside_json_strings_are_text():
    code = "print('</tool_call>'); s = '<tool_call>'"
    text = _call("python", '{"code": "' + code.replace("'", "\\u0027") + '"}')
    [call] = parse_tool_calls(text)
    assert call.error is None and call.arguments["code"] == code


def test_malformed_json_is_an_error_and_the_next_call_still_parses():
    text = "<tool_call>{name: python}</tool_call> " + _call("calculator", '{"expression": "1"}')
    bad, good = parse_tool_calls(text)
    assert bad.error is not None and bad.error.startswith("not valid JSON")
    assert good.error is None and good.name == "calculator"


def test_schema_errors_name_what_is_wrong():
    cases = {'<tool_call>[1, 2]</tool_call>': "a tool call must be a JSON object",
             '<tool_call>{"arguments": {}}</tool_call>': 'a tool call needs a "name" string',
             '<tool_call>{"name": "python", "arguments": [1]}</tool_call>':
                 '"arguments" must be a JSON object',
             '<tool_call>{"name": "python"} trailing</tool_call>': "text after the JSON object"}
    for text, error in cases.items():
        [call] = parse_tool_calls(text)
        assert call.error == error, text


def test_a_partial_call_cut_off_by_the_token_limit_is_unterminated():
    for text in ('<tool_call>{"name": "python", "argu', '<tool_call>{"name": "python"}'):
        [call] = parse_tool_calls(text)
        assert call.error == "unterminated <tool_call>", text


def test_nested_tags_give_one_error_and_a_stray_close_is_ignored():
    text = '<tool_call><tool_call>{"name": "python"}</tool_call></tool_call> done'
    [call] = parse_tool_calls(text)
    assert call.error is not None and call.error.startswith("not valid JSON")


def test_fenced_python_blocks_are_python_calls_unless_disabled():
    text = "Let me compute.\n```python\nx = 21\nx * 2\n```\nAnd:\n```py\nprint(3)\n```\n"
    calls = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in calls] == [
        ("python", {"code": "x = 21\nx * 2\n"}), ("python", {"code": "print(3)\n"})]
    assert parse_tool_calls(text, fenced_python=False) == []
    assert parse_tool_calls("```text\nnot code\n```") == []


def test_an_unclosed_fence_is_an_error():
    [call] = parse_tool_calls("```python\nx = 1\n")
    assert call.name == "python" and call.error == "unterminated ```python block"


def test_a_fence_inside_a_tool_call_span_is_not_a_second_call():
    text = "<tool_call>\n```python\nx = 1\n```\n</tool_call>"
    [call] = parse_tool_calls(text)
    assert call.name == "" and call.error is not None


def test_no_calls_in_plain_text():
    assert parse_tool_calls("The answer is \\boxed{42}.") == []
