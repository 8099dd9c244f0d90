"""Secret-looking values the tests store and then look for where they must not be."""

LLM_KEY = "sk-test-LLM-KEY-0123456789abcdef"
GITHUB_TOKEN = "ghp_TEST_TOKEN_0123456789abcdef"
