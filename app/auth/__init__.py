"""Who is asking, and what they may see. One module per concern; import from the submodule.

- `accounts`: users and passwords, sign-in attempts and their rate limit, the bootstrap admin;
- `sessions`: identifying each request (`identify()`), sign-in sessions, the current viewer;
- `tokens`: secrets handed to clients (hashing, comparing), API tokens, revoking;
- `shares`: share links to one image or collection;
- `scoping`: limiting every ORM query of a request to the viewer's own rows;
- `exposure`: refusing to serve a non-loopback address without sign-in.

Sign-in is on unless `ATELIER_AUTH=off`, which is allowed only on a loopback address
(`exposure.check_exposure`). Each request is identified once, in `sessions.identify()`:

- `Authorization: Bearer <token>`: an API token (stored as a SHA-256 hash, revocable);
- otherwise the session cookie, which holds a random session token whose hash is a
  `user_sessions` row, so signing out or expiry really ends the session (ASVS 3.3.1);
- with sign-in off, everyone is the site's owner.

What a viewer may see is enforced in one place: `scoping.install_scoping` adds the viewer's
`owner_id` to every ORM query of jobs, images and collections made while handling the request
(SQLAlchemy's `with_loader_criteria`), so a forgotten check in a view cannot leak another
user's work. Admins and open mode see everything; background threads are not scoped.

What a person creates is owned by whom the caller says (`owner_id=`), never read from the
request here: views pass `sessions.current_user_id()`, the CLI and the worker their own.
"""
