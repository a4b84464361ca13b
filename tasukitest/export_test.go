package tasukitest

// ScopeOfForTest is the test scope ctx carries, for the tests' messages.
var ScopeOfForTest = scopeOf
