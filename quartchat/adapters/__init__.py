"""Other libraries' private names, each read in one module per library, and nowhere else.

When a private attribute of a dependency is worth using (speed, a missing hook), it is read here,
behind a small function or class the rest of the code calls; the module's docstring lists each
name and the version pinned for it (requirements.txt), and tests/adapters/test_canaries.py has a
test per name that fails, naming the module, on the upgrade that moves it. (The servers' private
names are in quartchat/serving/adapters/, their canaries in tests/serving/test_canaries.py.) One module per
library, not per user of it: SQLAlchemy's names serve db/tx.py and db/sqlite.py alike, and an
upgrade of one library is one module to read.
"""
