// Every admin page: times written by the server as <time datetime> (UTC) are shown in the
// visitor's time zone, the one format the site's pages and the admin's live panel use.
import { localizeTimes } from "./common.js";

localizeTimes();
