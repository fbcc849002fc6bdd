# frozen_string_literal: true

# The dashboard's controllers inherit the app's (current_user, its CSP).
# Set before they load: eager loading may load them before any spec runs.
TenantKit::Rails::Dashboard.parent_controller = "ApplicationController"
