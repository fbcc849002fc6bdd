# frozen_string_literal: true

class RestoreTenantJob < ApplicationJob
  include TenantKit::Rails::RestoreJob
end
