"""Writers and checkers of the challenge's submission formats, the leaderboard, the run's report
page and its figures. Code only: the files they write live in submissions/ (outputs, never code)."""
