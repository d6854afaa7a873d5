import pytest

from nsfwkit.jsliteral import JSLiteralError, extract_exports_literal, parse_js_literal


def test_minified_literal_forms():
    text = '{a:1,"b c":-.5,d:!0,e:!1,f:[1e-3,2E+2,-0],g:null,h:"x\\"y\\u00e9",i:{},j:[],k:\'q\'}'
    value, end = parse_js_literal(text)
    assert end == len(text)
    assert value == {"a": 1, "b c": -0.5, "d": True, "e": False, "f": [0.001, 200.0, 0],
                     "g": None, "h": 'x"y\u00e9', "i": {}, "j": [], "k": "q"}


def test_code_is_refused():
    with pytest.raises(JSLiteralError, match="not a data literal"):
        parse_js_literal("{a:require('fs')}")
    with pytest.raises(JSLiteralError):
        parse_js_literal("{a:1")


def test_extract_umd_exports():
    source = '!function(e){module.exports=e()}(function(){return {1:[function(e,a,n){a.exports={x:[1,2]}},{}]}});'
    assert extract_exports_literal(source) == {"x": [1, 2]}
    with pytest.raises(JSLiteralError, match="bundle.js"):
        extract_exports_literal("var x = 1;", origin="bundle.js")


def test_hostile_literals_fail_cleanly():
    with pytest.raises(JSLiteralError, match="nested deeper"):
        parse_js_literal("[" * 5000 + "]" * 5000)
    for bad in ('"\\u12"', '"\\u{1F600}"', '"\\xZZ"'):
        with pytest.raises(JSLiteralError, match="escape"):
            parse_js_literal(bad)
